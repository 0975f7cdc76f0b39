//! A small axum API under flora-cluster: path parameters, JSON in and out, shared state, a
//! `tower-http` layer (a request timeout), and the route templates recorded by themselves.
//!
//! ```text
//! cargo build --example axum
//! flora-cluster run -w 2 --route-metrics -- target/debug/examples/axum
//! curl -s 127.0.0.1:1337/users/1
//! curl -s -XPOST -d '{"name":"ada"}' -H 'content-type: application/json' 127.0.0.1:1337/users
//! flora-cluster status   # the routes (/users/{id}) next to the paths
//! ```
//!
//! `HOST`/`PORT` (default 127.0.0.1:1337) or `LISTEN` (e.g. `unix:/run/app/http.sock`) say
//! where; standalone (no master) it serves by itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use flora_cluster::worker::RequestInfo;
use flora_cluster::Worker;
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;

/// Longest a request may take before it is answered 408 (the tower-http layer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared by the handlers of one worker process (each worker has its own copy: keep
/// cluster-wide state in a database, or read the cluster's numbers with `worker.status()`).
#[derive(Clone, Default)]
struct AppState {
    users: Arc<RwLock<HashMap<u64, User>>>,
}

#[derive(Clone, Serialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<User>, StatusCode> {
    // Shown beside the request on the status page while it runs.
    if let Some(info) = RequestInfo::current() {
        info.set("user", &id.to_string());
    }
    let users = state
        .users
        .read()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    users
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

async fn create_user(
    State(state): State<AppState>,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, Json<User>), StatusCode> {
    let mut users = state
        .users
        .write()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let id = users.keys().max().map_or(1, |m| m + 1);
    let user = User { id, name: new.name };
    users.insert(id, user.clone());
    Ok((StatusCode::CREATED, Json(user)))
}

async fn delete_user(State(state): State<AppState>, Path(id): Path<u64>) -> StatusCode {
    match state.users.write().map(|mut users| users.remove(&id)) {
        Ok(Some(_)) => StatusCode::NO_CONTENT,
        Ok(None) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Sleeps `ms` milliseconds (past [`REQUEST_TIMEOUT`]: answered 408 by the timeout layer).
async fn slow(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    "done\n"
}

fn app() -> Router {
    let state = AppState::default();
    if let Ok(mut users) = state.users.write() {
        users.insert(
            1,
            User {
                id: 1,
                name: "flora".into(),
            },
        );
    }
    Router::new()
        .route("/users", axum::routing::post(create_user))
        .route("/users/{id}", get(get_user).delete(delete_user))
        .route("/slow/{ms}", get(slow))
        .route("/", get(|| async { "Hello World\n" }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), flora_cluster::Error> {
    let worker = Worker::from_env()?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| format!("{host}:{port}"));
    let listener = worker.listen(&addr).await?;
    // The router goes in as it is; its matched routes are recorded by themselves.
    worker.serve(listener, app()).await
}
