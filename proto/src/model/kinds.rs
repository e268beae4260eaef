//! The kind enums of the model: one definition each, used by storage (postcard encodes them by
//! variant index, so variants are only ever appended), by the nodes, by the gateway's JSON
//! (snake_case names, from the same definition) and by the SDK.

use serde::{Deserialize, Serialize};

use crate::errors::{ModelError, Result};
use crate::v1;

/// Defines a model enum, its conversion to the protobuf enum and its validated conversion from
/// the protobuf number (an unknown or unspecified number is `INVALID_ARGUMENT` naming `field`).
macro_rules! kind_enum {
    (
        $(#[$doc:meta])*
        $name:ident => $pb:ident, $field:literal, $what:literal {
            $($variant:ident = $json:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name in JSON, e.g. `link_card` (serde's `snake_case`, checked by a test).
            pub fn json_name(self) -> &'static str {
                match self {
                    $($name::$variant => $json),+
                }
            }
        }

        impl From<$name> for v1::$pb {
            fn from(k: $name) -> Self {
                match k {
                    $($name::$variant => v1::$pb::$variant),+
                }
            }
        }

        impl TryFrom<i32> for $name {
            type Error = ModelError;

            fn try_from(v: i32) -> Result<Self> {
                match v1::$pb::try_from(v) {
                    $(Ok(v1::$pb::$variant) => Ok($name::$variant),)+
                    _ => Err(ModelError::invalid($field, format!(concat!("unknown ", $what, " {}"), v))),
                }
            }
        }
    };
}

kind_enum!(
    /// The kind of a conversation, fixed at creation.
    ConversationKind => ConversationKind, "kind", "conversation kind" {
        Direct = "direct", Group = "group", Channel = "channel"
    }
);

kind_enum!(
    /// What a message body holds, which decides how it is validated.
    MessageKind => MessageKind, "kind", "message kind" {
        Text = "text", LinkCard = "link_card", Sealed = "sealed", System = "system"
    }
);

kind_enum!(
    /// What kind of device signs in, shown in the device list.
    DeviceKind => DeviceKind, "device.kind", "device kind" {
        Phone = "phone", Tablet = "tablet", Pc = "pc", Web = "web"
    }
);

impl ConversationKind {
    /// The kinds a client may create (channels are not created through the public API yet).
    pub const CREATABLE: &'static [ConversationKind] =
        &[ConversationKind::Direct, ConversationKind::Group];
}

impl MessageKind {
    /// The kinds a client may send: `system` messages are written by the server only.
    pub const SENDABLE: &'static [MessageKind] = &[
        MessageKind::Text,
        MessageKind::LinkCard,
        MessageKind::Sealed,
    ];

    /// Text-like kinds must be valid UTF-8; sealed bodies are opaque ciphertext.
    pub fn requires_utf8(self) -> bool {
        !matches!(self, MessageKind::Sealed)
    }
}
