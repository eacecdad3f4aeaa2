//! `ocp.v1.ProfileService`: who the caller is, admitted by the core's operation table
//! like every other method.

use proto::ocp::v1 as pb;
use proto::ocp::v1::profile_service_server::ProfileService;
use tonic::{Request, Response, Status};

use super::admit;
use crate::service::{ApiOperation, Core};

pub struct ProfileGrpc {
    core: Core,
}

impl ProfileGrpc {
    pub fn new(core: Core) -> ProfileGrpc {
        ProfileGrpc { core }
    }
}

#[tonic::async_trait]
impl ProfileService for ProfileGrpc {
    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::CurrentUser>, Status> {
        let caller = admit(ApiOperation::GetCurrentUser, &request).await?;
        let user = self.core.current_user(&caller)?;
        Ok(Response::new(pb::CurrentUser {
            username: user.username,
            permissions: user
                .permissions
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
        }))
    }
}
