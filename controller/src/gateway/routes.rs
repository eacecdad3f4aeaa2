//! What the OpenAPI document the routes were built with says of each route: which
//! operation of the core's table it serves (its operationId), and whether it takes a
//! body. Read from the document so that what is documented, what is accepted and what
//! is permitted cannot differ.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::Method;

use crate::service::ApiOperation;

#[derive(Debug, Clone, Copy)]
struct Route {
    /// None for an operationId that names no operation: a route built wrong, which
    /// every request to it is refused for (see `extract`), and `tests/permissions.rs`
    /// catches.
    operation: Option<ApiOperation>,
    takes_body: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<HashMap<(Method, String), Route>>);

impl Routes {
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Routes {
        let mut routes = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::OPTIONS, &item.options),
                (Method::HEAD, &item.head),
                (Method::PATCH, &item.patch),
                (Method::TRACE, &item.trace),
            ];
            for (method, operation) in operations {
                if let Some(op) = operation {
                    let route = Route {
                        operation: op.operation_id.as_deref().and_then(ApiOperation::from_name),
                        takes_body: op.request_body.is_some(),
                    };
                    routes.insert((method, path.clone()), route);
                }
            }
        }
        Routes(Arc::new(routes))
    }

    /// The route at `matched` (served bare and under `/api/v2`); None for one the
    /// document does not know, which the router refuses. HEAD is served by the GET
    /// route, as axum does, and is that operation.
    fn find(&self, method: &Method, matched: &str) -> Option<Route> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let bare = matched
            .strip_prefix("/api/v2")
            .filter(|p| p.starts_with('/'));
        [Some(matched), bare]
            .into_iter()
            .flatten()
            .find_map(|path| self.0.get(&(method.clone(), path.to_string())).copied())
    }

    pub fn takes_body(&self, method: &Method, matched: &str) -> Option<bool> {
        self.find(method, matched).map(|r| r.takes_body)
    }

    pub fn operation(&self, method: &Method, matched: &str) -> Option<ApiOperation> {
        self.find(method, matched).and_then(|r| r.operation)
    }
}
