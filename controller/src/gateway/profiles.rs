//! `/profiles/me`: who the caller is, so the console can disable what they may not do.

use axum::extract::State;

use super::json::{CurrentUserJson, Envelope};
use super::{ApiResult, Data, Failures, GatewayState};
use crate::service::{ApiOperation, Caller};

/// The signed-in user and every permission they hold, implied ones included.
#[utoipa::path(operation_id = ApiOperation::GetCurrentUser.name(),
    get, path = "/profiles/me", tag = "profiles",
    responses((status = 200, description = "the caller", body = Envelope<CurrentUserJson>), Failures),
    security(("basic" = [])))]
pub async fn get_current_user(
    State(state): State<GatewayState>,
    caller: Caller,
) -> ApiResult<CurrentUserJson> {
    let user = state.core.current_user(&caller)?;
    Ok(Data((&user).into()))
}
