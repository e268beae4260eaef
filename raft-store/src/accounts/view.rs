//! Reads of accounts, handles and devices.

use std::sync::Arc;

use bongsu_proto::model::{DeviceId, UserId};

use super::apply::{account_key, device_key, device_prefix, handle_key};
use super::{AccountRecord, DeviceRecord, HandleRecord};
use crate::codec::decode;
use crate::errors::{Result, StoreError};
use crate::keys::{display_key, prefix_end, CF_SM};
use crate::store::Store;
use crate::GroupId;

#[derive(Clone)]
pub struct AccountView {
    store: Arc<Store>,
    group: GroupId,
}

impl AccountView {
    pub fn new(store: Arc<Store>, group: GroupId) -> Self {
        Self { store, group }
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        self.store
            .get(self.group, CF_SM, key)?
            .map(|v| decode(self.group, key, what, &v))
            .transpose()
    }

    /// The claim on a (normalized) handle.
    pub fn handle(&self, handle: &str) -> Result<Option<HandleRecord>> {
        self.get(&handle_key(self.group, handle), "handle")
    }

    /// Who holds a (normalized) handle, confirmed or not.
    pub fn handle_owner(&self, handle: &str) -> Result<Option<UserId>> {
        Ok(self.handle(handle)?.map(|h| h.user_id))
    }

    pub fn account(&self, user: &UserId) -> Result<Option<AccountRecord>> {
        self.get(&account_key(self.group, user), "account")
    }

    pub fn device(&self, user: &UserId, device: &DeviceId) -> Result<Option<DeviceRecord>> {
        self.get(&device_key(self.group, user, device), "device")
    }

    /// Every device of a user, revoked ones included, in device-id order.
    pub fn devices(&self, user: &UserId) -> Result<Vec<(DeviceId, DeviceRecord)>> {
        let from = device_prefix(self.group, user);
        let to = prefix_end(&from);
        let mut out = Vec::new();
        for item in self.store.scan(self.group, CF_SM, &from, &to, false) {
            let (k, v) = item?;
            let id = k
                .get(from.len()..)
                .and_then(|b| DeviceId::try_from(b).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    group: self.group,
                    key: display_key(&k),
                    what: "device key",
                    reason: "not user · device".into(),
                })?;
            out.push((id, decode(self.group, &k, "device", &v)?));
        }
        Ok(out)
    }
}
