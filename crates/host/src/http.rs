//! The REST API (axum) on a Unix socket and optionally TCP. Handlers only translate: each request
//! becomes a [`Command`] or a query on the [`Service`], run on a blocking thread; each
//! [`HostError`] becomes a status code and an [`ApiError`] body. The caller is known from the Unix
//! socket's peer credentials (the user name of its uid); over TCP, from its address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use strata_api::{
    ApiError, ApplyCheckpoint, ChangeMedia, CloneVm, CopyFile, CreateCheckpoint, CreateSwitch,
    CreateVm, DeleteCheckpointQuery, DeleteQuery, DiskSpec, EventQuery, ExportVm, ImportVm,
    MemoryTarget, NicSpec, PortForward, Proto, RenameCheckpoint, Reservation, SetNic, SetSwitch,
    SetVm, ShutdownRequest, TurnOffRequest, UndoAction,
};

use crate::error::{ErrorKind, HostError};
use crate::service::{Command, Reply, Service};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Peer(String);

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Self(match stream.io().peer_cred() {
            Ok(c) => user_name(c.uid()),
            Err(_) => "unknown".to_string(),
        })
    }
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        let addr: &SocketAddr = stream.remote_addr();
        Self(format!("tcp:{addr}"))
    }
}

/// The user name of `uid` through the system's name service (getpwuid_r: /etc/passwd, LDAP,
/// sssd … as nsswitch.conf says), or `uid:N` when it has none.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid:{uid}"),
    }
}

struct Failure(StatusCode, String, ErrorKind);

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        let status =
            StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self(status, e.message, e.kind)
    }
}

impl From<JsonRejection> for Failure {
    fn from(r: JsonRejection) -> Self {
        Self(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {}", r.body_text()),
            ErrorKind::Invalid,
        )
    }
}

impl From<QueryRejection> for Failure {
    fn from(r: QueryRejection) -> Self {
        Self(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", r.body_text()),
            ErrorKind::Invalid,
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: self.1,
            kind: self.2,
        };
        (self.0, Json(body)).into_response()
    }
}

type Result<T> = std::result::Result<T, Failure>;
type Svc = State<Arc<Service>>;

/// Runs `f` on a blocking thread (the service does blocking I/O and waits on workers).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, HostError> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Failure::from),
        Err(e) => Err(HostError::internal(format!("internal error: {e}")).into()),
    }
}

async fn run(svc: Arc<Service>, cmd: Command, user: String) -> Result<Response> {
    let created = matches!(
        cmd,
        Command::Create(_)
            | Command::CreateSwitch(_)
            | Command::CreateCheckpoint(..)
            | Command::Clone(..)
            | Command::Import(_)
    );
    let reply = blocking(move || svc.execute(cmd, &user)).await?;
    Ok(match reply {
        Reply::Vm(vm) if created => (StatusCode::CREATED, Json(vm)).into_response(),
        Reply::Vm(vm) => Json(vm).into_response(),
        Reply::Deleted => StatusCode::NO_CONTENT.into_response(),
        Reply::Stopped(report) => Json(report).into_response(),
        Reply::Switch(sw) if created => (StatusCode::CREATED, Json(sw)).into_response(),
        Reply::Switch(sw) => Json(sw).into_response(),
        Reply::Checkpoints(list) if created => (StatusCode::CREATED, Json(list)).into_response(),
        Reply::Checkpoints(list) => Json(list).into_response(),
    })
}

async fn host(State(s): Svc) -> Response {
    Json(s.host_info()).into_response()
}

async fn stop_vms(State(s): Svc, ConnectInfo(p): ConnectInfo<Peer>) -> Result<Response> {
    run(s, Command::StopVms, p.0).await
}

async fn list(State(s): Svc) -> Result<Response> {
    Ok(Json(blocking(move || Ok(s.list())).await?).into_response())
}

async fn create(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    body: std::result::Result<Json<CreateVm>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::Create(body?.0), p.0).await
}

async fn show(State(s): Svc, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(blocking(move || s.show(&name)).await?).into_response())
}

async fn set(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<SetVm>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::Set(name, body?.0), p.0).await
}

async fn delete(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    q: std::result::Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response> {
    let delete_disks = q?.0.delete_disks;
    run(s, Command::Delete { name, delete_disks }, p.0).await
}

async fn action(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let cmd = match action.as_str() {
        "start" => Command::Start(name),
        "shutdown" => {
            let req: ShutdownRequest = if body.is_empty() {
                ShutdownRequest::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    Failure(StatusCode::BAD_REQUEST, format!("invalid request body: {e}"), ErrorKind::Invalid)
                })?
            };
            if req.timeout_secs.is_some_and(|t| t > crate::service::MAX_SECS) {
                return Err(HostError::invalid(format!("timeout_secs is at most {}", crate::service::MAX_SECS)).into());
            }
            Command::Shutdown(name, req.timeout_secs, req.undo)
        }
        // Hyper-V's name (Stop-VM) and the plain one.
        "stop" | "turn-off" => {
            let req: TurnOffRequest = optional_body(&body)?;
            Command::TurnOff(name, req.undo)
        }
        "commit-undo" => Command::Undo(name, UndoAction::Commit),
        "discard-undo" => Command::Undo(name, UndoAction::Discard),
        "reset" => Command::Reset(name),
        "pause" => Command::Pause(name),
        "resume" => Command::Resume(name),
        "save" => Command::Save(name),
        "discard-saved" => Command::DiscardSaved(name),
        "freeze" => Command::Freeze(name),
        "thaw" => Command::Thaw(name),
        other => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("unknown action '{other}': start, shutdown, stop (or turn-off), reset, pause, resume, save, discard-saved, freeze, thaw, commit-undo or discard-undo"),
                ErrorKind::NotFound,
            ))
        }
    };
    run(s, cmd, p.0).await
}

async fn console(State(s): Svc, Path(name): Path<String>) -> Result<Response> {
    let text = blocking(move || s.console_log(&name)).await?;
    Ok(([("content-type", "text/plain; charset=utf-8")], text).into_response())
}

async fn events(
    State(s): Svc,
    q: std::result::Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response> {
    let q = q?.0;
    let list = blocking(move || s.event_log(q.vm.as_deref(), q.since.as_deref())).await?;
    Ok(Json(list).into_response())
}

async fn switches(State(s): Svc) -> Result<Response> {
    Ok(Json(blocking(move || Ok(s.switches())).await?).into_response())
}

async fn create_switch(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    body: std::result::Result<Json<CreateSwitch>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::CreateSwitch(body?.0), p.0).await
}

async fn switch(State(s): Svc, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(blocking(move || s.switch(&name)).await?).into_response())
}

async fn delete_switch(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Result<Response> {
    run(s, Command::DeleteSwitch(name), p.0).await
}

async fn set_switch(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<SetSwitch>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::SetSwitch(name, body?.0), p.0).await
}

async fn reserve(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<Reservation>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::Reserve(name, body?.0), p.0).await
}

async fn unreserve(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, mac)): Path<(String, String)>,
) -> Result<Response> {
    run(s, Command::Unreserve(name, mac), p.0).await
}

async fn add_forward(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<PortForward>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::AddForward(name, body?.0), p.0).await
}

async fn remove_forward(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, proto, port)): Path<(String, String, String)>,
) -> Result<Response> {
    let proto = match proto.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(HostError::invalid(format!("protocol '{other}': use tcp or udp")).into())
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| HostError::invalid(format!("port '{port}': expected 1 to 65535")))?;
    run(s, Command::RemoveForward(name, proto, port), p.0).await
}

async fn copy_file(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<CopyFile>, JsonRejection>,
) -> Result<Response> {
    let body = body?.0;
    let user = p.0;
    let report = blocking(move || s.copy_file(&name, &body, &user)).await?;
    Ok(Json(report).into_response())
}

async fn change_media(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<ChangeMedia>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::ChangeMedia(name, body?.0), p.0).await
}

async fn set_memory(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<MemoryTarget>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::SetMemory(name, body?.0.target_mib), p.0).await
}

async fn add_nic(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<NicSpec>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::AddNic(name, body?.0), p.0).await
}

/// An optional JSON body: empty is the default.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
            ErrorKind::Invalid,
        )
    })
}

async fn checkpoints(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Result<Response> {
    run(s, Command::Checkpoints(name), p.0).await
}

async fn create_checkpoint(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: CreateCheckpoint = optional_body(&body)?;
    run(s, Command::CreateCheckpoint(name, req.name), p.0).await
}

async fn rename_checkpoint(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, cp)): Path<(String, String)>,
    body: std::result::Result<Json<RenameCheckpoint>, JsonRejection>,
) -> Result<Response> {
    let new = body?.0.name;
    run(s, Command::RenameCheckpoint(name, cp, new), p.0).await
}

async fn delete_checkpoint(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, cp)): Path<(String, String)>,
    q: std::result::Result<Query<DeleteCheckpointQuery>, QueryRejection>,
) -> Result<Response> {
    let subtree = q?.0.subtree;
    run(s, Command::DeleteCheckpoint(name, cp, subtree), p.0).await
}

async fn apply_checkpoint(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, cp)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: ApplyCheckpoint = optional_body(&body)?;
    run(s, Command::ApplyCheckpoint(name, Some(cp), req.force), p.0).await
}

async fn export_vm(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<ExportVm>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::Export(name, body?.0), p.0).await
}

async fn import_vm(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    body: std::result::Result<Json<ImportVm>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::Import(body?.0), p.0).await
}

async fn clone_vm(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<CloneVm>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::Clone(name, body?.0), p.0).await
}

async fn add_disk(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path(name): Path<String>,
    body: std::result::Result<Json<DiskSpec>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::AddDisk(name, body?.0), p.0).await
}

async fn remove_disk(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, disk)): Path<(String, String)>,
) -> Result<Response> {
    run(s, Command::RemoveDisk(name, disk), p.0).await
}

async fn set_nic(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, nic)): Path<(String, String)>,
    body: std::result::Result<Json<SetNic>, JsonRejection>,
) -> Result<Response> {
    run(s, Command::SetNic(name, nic, body?.0), p.0).await
}

async fn remove_nic(
    State(s): Svc,
    ConnectInfo(p): ConnectInfo<Peer>,
    Path((name, nic)): Path<(String, String)>,
) -> Result<Response> {
    run(s, Command::RemoveNic(name, nic), p.0).await
}

async fn leases(State(s): Svc, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(blocking(move || s.leases(&name)).await?).into_response())
}

async fn fallback() -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        "no such API route: see docs/openapi.json".to_string(),
        ErrorKind::NotFound,
    )
}

/// The API's router. Its routes are exactly [`strata_api::ROUTES`] (a test checks both against
/// `docs/openapi.json`).
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/host", get(host))
        .route("/v1/host/stop-vms", post(stop_vms))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(show).patch(set).delete(delete))
        .route("/v1/vms/{name}/{action}", post(action))
        .route("/v1/vms/{name}/console", get(console))
        .route("/v1/events", get(events))
        .route("/v1/switches", get(switches).post(create_switch))
        .route(
            "/v1/switches/{name}",
            get(switch).delete(delete_switch).patch(set_switch),
        )
        .route("/v1/switches/{name}/leases", get(leases))
        .route("/v1/switches/{name}/reservations", post(reserve))
        .route(
            "/v1/switches/{name}/reservations/{mac}",
            axum::routing::delete(unreserve),
        )
        .route("/v1/switches/{name}/forwards", post(add_forward))
        .route(
            "/v1/switches/{name}/forwards/{proto}/{port}",
            axum::routing::delete(remove_forward),
        )
        .route("/v1/vms/{name}/copy-file", post(copy_file))
        .route("/v1/vms/{name}/media", post(change_media))
        .route("/v1/vms/{name}/memory", post(set_memory))
        .route("/v1/vms/import", post(import_vm))
        .route("/v1/vms/{name}/export", post(export_vm))
        .route("/v1/vms/{name}/clone", post(clone_vm))
        .route(
            "/v1/vms/{name}/checkpoints",
            get(checkpoints).post(create_checkpoint),
        )
        .route(
            "/v1/vms/{name}/checkpoints/{checkpoint}",
            axum::routing::patch(rename_checkpoint).delete(delete_checkpoint),
        )
        .route(
            "/v1/vms/{name}/checkpoints/{checkpoint}/apply",
            post(apply_checkpoint),
        )
        .route("/v1/vms/{name}/disks", post(add_disk))
        .route(
            "/v1/vms/{name}/disks/{disk}",
            axum::routing::delete(remove_disk),
        )
        .route("/v1/vms/{name}/nics", post(add_nic))
        .route(
            "/v1/vms/{name}/nics/{nic}",
            axum::routing::patch(set_nic).delete(remove_nic),
        )
        .fallback(fallback)
        .with_state(service)
}

/// Serves the API on `unix` (and `tcp`) until SIGTERM or SIGINT. Running VMs are left running.
pub async fn serve(
    service: Arc<Service>,
    unix: tokio::net::UnixListener,
    tcp: Option<tokio::net::TcpListener>,
) -> std::io::Result<()> {
    let app = router(service);
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    };
    let unix_server = axum::serve(
        unix,
        app.clone().into_make_service_with_connect_info::<Peer>(),
    );
    match tcp {
        None => unix_server.with_graceful_shutdown(shutdown).await,
        Some(tcp) => {
            let tcp_server = axum::serve(tcp, app.into_make_service_with_connect_info::<Peer>());
            tokio::select! {
                r = unix_server.with_graceful_shutdown(shutdown) => r,
                r = tcp_server => r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_names_come_from_the_name_service() {
        assert_eq!(super::user_name(0), "root");
        // No user has this id: the caller is still named.
        assert_eq!(super::user_name(3_999_999_999), "uid:3999999999");
    }
}
