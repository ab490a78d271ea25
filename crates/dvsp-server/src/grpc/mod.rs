//! The gRPC front end (`proto/dvsp/v1/dvsp.proto`), served beside HTTP by
//! `dvsp serve --grpc-bind`. It shares the REST API's state: the same store, inference
//! worker, API keys (metadata `x-api-key` or `authorization: Bearer`), limits and metrics;
//! every call runs the operation in `service.rs`. The key is checked, and the framing of the
//! body, by a layer in front of the service (`guard.rs`) before any decoding; messages that do
//! not parse are INVALID_ARGUMENT (`codec.rs`). gRPC health checking and reflection are served
//! too.
pub mod codec;
mod guard;
mod incoming;

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::auth::Caller;
use super::error::ApiError;
use super::{service, AppState};

/// The messages, server and client generated from `proto/dvsp/v1/dvsp.proto` by
/// tonic-prost-build, checked in under `generated/` so that no build runs protoc:
/// `make lint` regenerates them (`tools/protogen`) and fails if they differ; `make protogen`
/// rewrites them after a change to the .proto.
pub mod proto {
    include!("generated/dvsp.v1.rs");

    /// The encoded descriptor set, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/dvsp_descriptor.bin");
}

use proto::verification_server::{Verification, VerificationServer};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::BadRequest(_)
            | ApiError::Unprocessable(_)
            | ApiError::UnsupportedMediaType(_) => Code::InvalidArgument,
            ApiError::Unauthorized(_) => Code::Unauthenticated,
            ApiError::Forbidden(_) => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Conflict(_) => Code::AlreadyExists,
            ApiError::Precondition(_) => Code::FailedPrecondition,
            ApiError::PayloadTooLarge(_) | ApiError::TooManyRequests { .. } => {
                Code::ResourceExhausted
            }
            ApiError::Busy | ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Code::Internal
            }
        };
        let message = match &e {
            ApiError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut status = Status::new(code, message);
        if let Some(id) = super::request_id::current().and_then(|id| id.parse().ok()) {
            status.metadata_mut().insert("x-request-id", id);
        }
        status
    }
}

/// The `Verification` service over the shared state.
pub struct Grpc {
    app: AppState,
}

impl Grpc {
    /// Runs one call as the caller the guard authenticated: runs `op`, records `dvsp_grpc_*`
    /// metrics.
    async fn call<M, T, F, Fut>(
        &self,
        method: &'static str,
        req: Request<M>,
        op: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(Caller, M) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let start = Instant::now();
        let (_, extensions, msg) = req.into_parts();
        let result = match extensions.get::<Caller>() {
            Some(caller) => op(caller.clone(), msg).await,
            None => Err(ApiError::Internal(
                "a gRPC call reached the service without the key check".into(),
            )),
        };
        let result = result.map(Response::new).map_err(Status::from);
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let m = &self.app.metrics;
        m.grpc_requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        m.grpc_latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        result
    }
}

impl From<dvsp_custody::store::Subject> for proto::Subject {
    fn from(s: dvsp_custody::store::Subject) -> Self {
        proto::Subject {
            id: s.id,
            name: s.name,
            created_at_ms: s.created_at,
        }
    }
}

impl From<service::Decision> for proto::Decision {
    fn from(d: service::Decision) -> Self {
        proto::Decision {
            r#match: d.is_match,
            similarity: d.similarity,
            distance: d.distance,
            threshold: d.threshold,
            quality: d.quality,
            model_id: d.model_id,
        }
    }
}

/// An empty string is "not given" in proto3.
fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Verification for Grpc {
    async fn create_subject(
        &self,
        req: Request<proto::CreateSubjectRequest>,
    ) -> Result<Response<proto::Subject>, Status> {
        self.call("CreateSubject", req, |c, r| async move {
            let s = self
                .app
                .create_subject(&c, given(r.id), r.name.as_deref())
                .await?;
            Ok(s.into())
        })
        .await
    }

    async fn get_subject(
        &self,
        req: Request<proto::GetSubjectRequest>,
    ) -> Result<Response<proto::SubjectDetail>, Status> {
        self.call("GetSubject", req, |c, r| async move {
            let d = self.app.subject(&c, &r.id).await?;
            let subject_id = d.subject.id.clone();
            Ok(proto::SubjectDetail {
                subject: Some(d.subject.into()),
                templates: d
                    .templates
                    .into_iter()
                    .map(|t| proto::Template {
                        id: t.id,
                        subject_id: subject_id.clone(),
                        model_id: t.model_id,
                        quality: t.quality,
                        created_at_ms: t.created_at,
                        image_retained: t.image_retained,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn list_subjects(
        &self,
        req: Request<proto::ListSubjectsRequest>,
    ) -> Result<Response<proto::ListSubjectsResponse>, Status> {
        self.call("ListSubjects", req, |c, r| async move {
            let limit = if r.limit == 0 { 50 } else { r.limit };
            let after = given(r.after);
            let prefix = given(r.prefix);
            let page = self
                .app
                .list_subjects(&c, after.as_deref(), prefix.as_deref(), limit)
                .await?;
            Ok(proto::ListSubjectsResponse {
                subjects: page.subjects.into_iter().map(Into::into).collect(),
                next_after: page.next_after.unwrap_or_default(),
            })
        })
        .await
    }

    async fn delete_subject(
        &self,
        req: Request<proto::DeleteSubjectRequest>,
    ) -> Result<Response<proto::Deleted>, Status> {
        self.call("DeleteSubject", req, |c, r| async move {
            self.app.delete_subject(&c, &r.id).await?;
            Ok(proto::Deleted {})
        })
        .await
    }

    async fn enroll(
        &self,
        req: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::Template>, Status> {
        self.call("Enroll", req, |c, r| async move {
            let e = self.app.enroll(&c, &r.subject_id, Ok(r.image)).await?;
            Ok(proto::Template {
                id: e.template_id,
                subject_id: e.subject_id,
                model_id: e.model_id,
                quality: e.quality,
                created_at_ms: e.created_at,
                image_retained: e.image_retained,
            })
        })
        .await
    }

    async fn delete_template(
        &self,
        req: Request<proto::DeleteTemplateRequest>,
    ) -> Result<Response<proto::Deleted>, Status> {
        self.call("DeleteTemplate", req, |c, r| async move {
            self.app
                .delete_template(&c, &r.subject_id, &r.template_id)
                .await?;
            Ok(proto::Deleted {})
        })
        .await
    }

    async fn verify(
        &self,
        req: Request<proto::VerifyRequest>,
    ) -> Result<Response<proto::SubjectDecision>, Status> {
        self.call("Verify", req, |c, r| async move {
            let d = self
                .app
                .verify_subject(&c, &r.subject_id, Ok(r.image))
                .await?;
            Ok(proto::SubjectDecision {
                subject_id: d.subject_id,
                decision_rule: d.decision_rule.to_string(),
                templates_compared: d.templates_compared as u32,
                migrating: d.migrating,
                decision: Some(d.decision.into()),
            })
        })
        .await
    }

    async fn verify_pair(
        &self,
        req: Request<proto::VerifyPairRequest>,
    ) -> Result<Response<proto::Decision>, Status> {
        self.call("VerifyPair", req, |c, r| async move {
            Ok(self
                .app
                .verify_pair(&c, Ok(r.image_a), Ok(r.image_b))
                .await?
                .into())
        })
        .await
    }

    async fn identify(
        &self,
        req: Request<proto::IdentifyRequest>,
    ) -> Result<Response<proto::IdentifyResponse>, Status> {
        self.call("Identify", req, |c, r| async move {
            let top_k = if r.top_k == 0 { 5 } else { r.top_k as usize };
            let id = self.app.identify(&c, Ok(r.image), Ok(top_k)).await?;
            Ok(proto::IdentifyResponse {
                r#match: id.is_match,
                candidates: id
                    .candidates
                    .into_iter()
                    .map(|c| proto::Candidate {
                        subject_id: c.subject_id,
                        distance: c.distance,
                        similarity: c.similarity,
                        r#match: c.is_match,
                    })
                    .collect(),
                threshold: id.threshold,
                quality: id.quality,
                model_id: id.model_id,
                gallery_templates: id.gallery_templates as u32,
                withheld: id.withheld as u32,
            })
        })
        .await
    }

    async fn get_model(
        &self,
        req: Request<proto::GetModelRequest>,
    ) -> Result<Response<proto::ModelInfo>, Status> {
        self.call("GetModel", req, |c, _| async move {
            let m = self.app.model_info(&c).await?;
            Ok(proto::ModelInfo {
                model_id: m.card.model_id.clone(),
                method: m.card.training.config.method.name().to_string(),
                threshold: m.threshold,
                operating_point: m.operating_point,
                card_json: serde_json::to_string(&m.card)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
                previous_model_id: m.previous_model_id,
            })
        })
        .await
    }
}

/// Serves the `Verification` service, health checking and reflection on `listener` until
/// `shutdown` resolves. Messages are limited to the HTTP body limit, calls to its timeout;
/// connections to `--max-connections` and the preface to `--header-timeout-secs`
/// (`incoming.rs`). TLS when `listener` is a `tls::Listener` with a certificate.
pub async fn serve(
    listener: impl Into<super::tls::Listener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limits = state.limits.clone();
    let state_metrics = state.metrics.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<VerificationServer<Grpc>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptor set is valid");
    tonic::transport::Server::builder()
        .timeout(limits.timeout)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(guard::Guarded::new(
            VerificationServer::new(Grpc { app: state.clone() })
                .max_decoding_message_size(limits.max_body_bytes),
            state,
        ))
        .serve_with_incoming_shutdown(
            incoming::admitted(
                listener.into(),
                limits.max_connections,
                limits.header_timeout,
                state_metrics,
            ),
            shutdown,
        )
        .await
}
