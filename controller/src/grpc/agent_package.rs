//! `ocp.v1.AgentPackageService`: the streamed upload, the list and the delete of agent
//! packages, admitted by the core's operation table like every other method.

use bytes::Bytes;
use futures::StreamExt;
use proto::ocp::v1 as pb;
use proto::ocp::v1::agent_package_service_server::AgentPackageService;
use proto::ocp::v1::upload_package_request::Part;
use tonic::{Request, Response, Status, Streaming};

use super::{admit, convert, page_request};
use crate::model::AgentPackage;
use crate::service::{ApiOperation, Core};
use crate::time::format_millis;

pub struct AgentPackageGrpc {
    core: Core,
}

impl AgentPackageGrpc {
    pub fn new(core: Core) -> AgentPackageGrpc {
        AgentPackageGrpc { core }
    }
}

fn package(p: &AgentPackage) -> pb::AgentPackage {
    pb::AgentPackage {
        id: p.id,
        version: p.version.clone(),
        arch: p.arch.to_string(),
        sha256: p.sha256.clone(),
        size: p.size,
        uploaded_by: p.uploaded_by.clone(),
        upload_time: format_millis(p.upload_time),
    }
}

#[tonic::async_trait]
impl AgentPackageService for AgentPackageGrpc {
    async fn upload_package(
        &self,
        request: Request<Streaming<pb::UploadPackageRequest>>,
    ) -> Result<Response<pb::AgentPackage>, Status> {
        let caller = admit(ApiOperation::UploadPackage, &request).await?;
        let mut messages = request.into_inner();
        let header = match messages.message().await? {
            Some(pb::UploadPackageRequest {
                part: Some(Part::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of an upload must carry the header (version, sha256)",
                ));
            }
        };
        let sha256 = (!header.sha256.is_empty()).then_some(header.sha256.as_str());
        let mut content = messages.map(|message| match message?.part {
            Some(Part::Chunk(chunk)) => Ok(Bytes::from(chunk)),
            Some(Part::Header(_)) => Err(Status::invalid_argument(
                "a header came after the first message; only chunks may follow it",
            )),
            None => Ok(Bytes::new()),
        });
        let stored = self
            .core
            .upload_package(&caller, &header.version, sha256, &mut content)
            .await?;
        Ok(Response::new(package(&stored)))
    }

    async fn list_packages(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Result<Response<pb::AgentPackagePage>, Status> {
        let caller = admit(ApiOperation::ListPackages, &request).await?;
        let r = request.get_ref();
        let page = self
            .core
            .list_packages(&caller, page_request(r.page, r.size)?)
            .await?;
        Ok(Response::new(pb::AgentPackagePage {
            contents: page.contents.iter().map(package).collect(),
            page: Some(convert::page(&page)),
        }))
    }

    async fn delete_package(
        &self,
        request: Request<pb::DeletePackageRequest>,
    ) -> Result<Response<pb::AgentPackage>, Status> {
        let caller = admit(ApiOperation::DeletePackage, &request).await?;
        let deleted = self
            .core
            .delete_package(&caller, request.get_ref().id)
            .await?;
        Ok(Response::new(package(&deleted)))
    }
}
