//! Public documents: the key set that verifies platform tokens, and the API
//! description.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks)).route("/openapi.json", get(openapi))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "well-known",
    responses((status = 200, description = "The public keys of every signing key still in use")))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let set = state.keys().jwks().await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(set)))
}

#[utoipa::path(get, path = "/openapi.json", tag = "well-known",
    responses((status = 200, description = "This document")))]
pub(crate) async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::ApiDoc::openapi())
}
