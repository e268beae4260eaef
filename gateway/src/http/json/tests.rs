use serde_json::json;

use super::*;

fn id(byte: u8) -> Vec<u8> {
    vec![byte; 16]
}

fn hex(byte: u8) -> String {
    hex::encode(id(byte))
}

fn message(kind: v1::MessageKind, body: &[u8]) -> v1::Message {
    v1::Message {
        conv_id: id(1),
        seq: 5,
        sender: id(2),
        device: id(3),
        client_msg_id: id(4),
        kind: kind as i32,
        body: body.to_vec(),
        sent_at_ms: 1_700_000_000_000,
    }
}

#[test]
fn ids_parse_from_hex_and_errors_name_the_field() {
    assert_eq!(parse_id::<ConvId>(&hex(0xab), "conv_id"), Ok(id(0xab)));
    let table = [
        ("", "conv_id"),
        ("xyz", "conv_id"),
        ("0123456789abcdef0123456789abcdeg", "members[3]"),
        ("0123", "cursors.0123"),
    ];
    for (bad, field) in table {
        let err = parse_id::<ConvId>(bad, field).expect_err(bad);
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad}");
        assert!(
            err.message.starts_with(&format!("{field}: ")),
            "{}",
            err.message
        );
    }
    let err = CreateConversationBody {
        conv_id: hex(1),
        kind: ConversationKind::Group,
        members: vec![hex(2), "nope".into()],
    }
    .into_proto()
    .expect_err("a bad member id");
    assert!(err.message.starts_with("members[1]: "), "{}", err.message);
}

#[test]
fn requests_deserialize_from_snake_case_json() {
    let c: Credentials = serde_json::from_value(json!({
        "handle": "jisoo", "password": "pw", "device": {"kind": "phone", "name": "Jisoo's phone"}
    }))
    .expect("valid credentials");
    let req = c.into_sign_up();
    assert_eq!(req.handle, "jisoo");
    assert_eq!(
        req.device.map(|d| d.kind),
        Some(v1::DeviceKind::Phone as i32)
    );

    let b: CreateConversationBody =
        serde_json::from_value(json!({"conv_id": hex(1), "kind": "direct", "members": [hex(2)]}))
            .expect("valid create");
    let req = b.into_proto().expect("valid ids");
    assert_eq!(req.kind, v1::ConversationKind::Direct as i32);
    assert_eq!(req.members, vec![id(2)]);

    let s: SyncBody = serde_json::from_value(json!({"cursors": {hex(1): 7}})).expect("valid sync");
    let req = s.into_proto().expect("valid ids");
    assert_eq!(
        req.cursors,
        vec![v1::Cursor {
            conv_id: id(1),
            seq: 7
        }]
    );
    assert_eq!(
        req.limit_per_conversation, 0,
        "the service applies its default"
    );

    let empty: ChangeMembersBody = serde_json::from_value(json!({})).expect("both lists default");
    assert!(empty.add.is_empty() && empty.remove.is_empty());
}

#[test]
fn requests_with_unknown_enums_or_missing_fields_do_not_deserialize() {
    let bad = [
        json!({"handle": "jisoo", "password": "pw", "device": {"kind": "fax", "name": "x"}}),
        json!({"handle": "jisoo", "password": "pw"}),
        json!({"handle": 7, "password": "pw", "device": {"kind": "pc", "name": "x"}}),
    ];
    for v in bad {
        assert!(
            serde_json::from_value::<Credentials>(v.clone()).is_err(),
            "{v}"
        );
    }
    assert!(serde_json::from_value::<SendBody>(
        json!({"client_msg_id": hex(1), "kind": "video", "text": "x"})
    )
    .is_err());
    assert!(serde_json::from_value::<MarkReadBody>(json!({"seq": -1})).is_err());
    assert!(serde_json::from_value::<CreateConversationBody>(
        json!({"conv_id": hex(1), "kind": "group"})
    )
    .is_err());
}

#[test]
fn sends_take_exactly_one_of_text_and_base64() {
    let send = |v: serde_json::Value| {
        serde_json::from_value::<SendBody>(v)
            .expect("valid JSON")
            .into_proto(id(1))
    };
    let text =
        send(json!({"client_msg_id": hex(9), "kind": "text", "text": "안녕"})).expect("text");
    assert_eq!(text.body, "안녕".as_bytes());
    assert_eq!(text.kind, v1::MessageKind::Text as i32);
    assert_eq!(text.client_msg_id, id(9));
    // Bytes that are not UTF-8 get through this layer; the service answers INVALID_ARGUMENT.
    let raw = send(json!({"client_msg_id": hex(9), "kind": "text", "body_base64": "//4="}))
        .expect("base64");
    assert_eq!(raw.body, vec![0xff, 0xfe]);
    for bad in [
        json!({"client_msg_id": hex(9), "kind": "text"}),
        json!({"client_msg_id": hex(9), "kind": "text", "text": "a", "body_base64": "YQ=="}),
        json!({"client_msg_id": hex(9), "kind": "sealed", "body_base64": "not base64!"}),
        json!({"client_msg_id": "9", "kind": "text", "text": "a"}),
    ] {
        let err = send(bad.clone()).expect_err("rejected");
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad}");
    }
}

#[test]
fn messages_carry_text_or_base64_by_kind() {
    let m = serde_json::to_value(
        Message::try_from(message(v1::MessageKind::Text, "hi".as_bytes())).expect("known kind"),
    )
    .expect("serializable");
    assert_eq!(
        m,
        json!({
            "conv_id": hex(1), "seq": 5, "sender": hex(2), "device": hex(3),
            "client_msg_id": hex(4), "kind": "text", "text": "hi", "sent_at_ms": 1_700_000_000_000u64
        })
    );
    let sealed = serde_json::to_value(
        Message::try_from(message(v1::MessageKind::Sealed, &[0xff, 0xfe])).expect("known kind"),
    )
    .expect("serializable");
    assert_eq!(sealed["kind"], "sealed");
    assert_eq!(sealed["body_base64"], "//4=");
    assert!(sealed.get("text").is_none());
    let card = Message::try_from(message(v1::MessageKind::LinkCard, b"{}")).expect("known kind");
    assert_eq!(card.kind, MessageKind::LinkCard);
    assert_eq!(card.text.as_deref(), Some("{}"));
    let err = Message::try_from(v1::Message {
        kind: 42,
        ..message(v1::MessageKind::Text, b"")
    })
    .expect_err("unknown kind");
    assert_eq!(err.code, ErrorCode::CorruptData);
}

#[test]
fn replies_serialize_as_documented() {
    let summary = v1::ConversationSummary {
        conv_id: id(1),
        kind: v1::ConversationKind::Group as i32,
        last_seq: 9,
        read_seq: 4,
        unread: 5,
        last_message: None,
        members: vec![v1::Member {
            user_id: id(2),
            handle: "jisoo".into(),
            role: "owner".into(),
        }],
    };
    let list = Conversations::try_from(v1::ListConversationsReply {
        conversations: vec![summary.clone()],
    })
    .expect("valid");
    assert_eq!(
        serde_json::to_value(list).expect("serializable"),
        json!({"conversations": [{
            "conv_id": hex(1), "kind": "group", "last_seq": 9, "read_seq": 4, "unread": 5,
            "last_message": null,
            "members": [{"user_id": hex(2), "handle": "jisoo", "role": "owner"}]
        }]})
    );
    let sync = Sync::try_from(v1::SyncReply {
        conversations: vec![v1::ConversationSync {
            conversation: Some(summary),
            messages: vec![message(v1::MessageKind::Text, b"x")],
            has_more: true,
        }],
    })
    .expect("valid");
    let v = serde_json::to_value(sync).expect("serializable");
    assert_eq!(v["conversations"][0]["conversation"]["conv_id"], hex(1));
    assert_eq!(v["conversations"][0]["messages"][0]["text"], "x");
    assert_eq!(v["conversations"][0]["has_more"], true);

    let session = Session::from(v1::Session {
        user_id: id(7),
        handle: "jisoo".into(),
        device_id: id(8),
        access_token: "a".into(),
        access_expires_at_ms: 1,
        refresh_token: "r".into(),
    });
    let v = serde_json::to_value(session).expect("serializable");
    assert_eq!(v["user_id"], hex(7));
    assert_eq!(v["device_id"], hex(8));
    let devices = Devices::try_from(v1::ListDevicesReply {
        devices: vec![v1::Device {
            device_id: id(8),
            kind: v1::DeviceKind::Web as i32,
            name: "browser".into(),
            created_at_ms: 3,
            revoked: false,
            current: true,
        }],
    })
    .expect("valid");
    assert_eq!(
        serde_json::to_value(devices).expect("serializable"),
        json!({"devices": [{"device_id": hex(8), "kind": "web", "name": "browser", "created_at_ms": 3, "revoked": false, "current": true}]})
    );
    assert_eq!(
        serde_json::to_value(Empty {}).expect("serializable"),
        json!({})
    );
}
