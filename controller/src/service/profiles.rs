//! Who the caller is, as a client needs to know before it offers what the caller may do.

use super::{ApiOperation, Caller, Core, CoreError};
use crate::auth::Permission;

/// The signed-in user, as the console shows and heeds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    pub username: String,
    /// Every permission held, the implied ones included (HOST_MANAGER brings
    /// HOST_VIEWER), so that a client needs no copy of the implication rules.
    pub permissions: Vec<Permission>,
}

impl Core {
    pub fn current_user(&self, caller: &Caller) -> Result<CurrentUser, CoreError> {
        caller.admitted(ApiOperation::GetCurrentUser)?;
        Ok(CurrentUser {
            username: caller.name().to_string(),
            permissions: caller.permissions().iter().collect(),
        })
    }
}
