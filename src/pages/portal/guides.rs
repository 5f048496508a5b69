//! The guides the integration pages link to, from `docs/guides/`: Markdown
//! compiled into the binary and rendered once, on first use.

use std::sync::LazyLock;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;

use super::{Chrome, Portal};
use crate::connections::Kind;
use crate::error::ApiError;
use crate::pages::{CsrfToken, PageError, html};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/admin/guides/{name}", get(guide))
}

struct Guide {
    kind: Kind,
    title: &'static str,
    markdown: &'static str,
}

const GUIDES: [Guide; 3] = [
    Guide {
        kind: Kind::Okta,
        title: "Provisioning Users and Single Sign-On with Okta",
        markdown: include_str!("../../../docs/guides/okta.md"),
    },
    Guide {
        kind: Kind::AzureAd,
        title: "Provisioning Users and Single Sign-On with Azure Active Directory",
        markdown: include_str!("../../../docs/guides/azure-ad.md"),
    },
    Guide {
        kind: Kind::Ping,
        title: "Single Sign-On with Ping Identity",
        markdown: include_str!("../../../docs/guides/ping.md"),
    },
];

/// The guide's title for a kind, as the integration page links it.
pub(crate) fn title_of(kind: Kind) -> &'static str {
    GUIDES.iter().find(|g| g.kind == kind).map(|g| g.title).unwrap_or_default()
}

/// The guides as HTML. The Markdown is the project's own, but raw HTML in
/// it is escaped all the same: the pages' CSP allows no inline anything.
static RENDERED: LazyLock<Vec<String>> = LazyLock::new(|| {
    GUIDES
        .iter()
        .map(|g| {
            let events = pulldown_cmark::Parser::new_ext(g.markdown, pulldown_cmark::Options::ENABLE_TABLES)
                .map(|e| match e {
                    pulldown_cmark::Event::Html(h) | pulldown_cmark::Event::InlineHtml(h) => {
                        pulldown_cmark::Event::Text(h)
                    }
                    other => other,
                });
            let mut out = String::new();
            pulldown_cmark::html::push_html(&mut out, events);
            out
        })
        .collect()
});

#[derive(Template)]
#[template(path = "portal/guide.html")]
struct GuidePage<'a> {
    chrome: Chrome,
    title: &'static str,
    body: &'a str,
    /// Where the values the guide asks for are, for this person.
    values: Vec<(&'static str, String)>,
}

async fn guide(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let Some(at) = GUIDES.iter().position(|g| g.kind.slug() == name) else {
        return Err(PageError(ApiError::NotFound("guide")));
    };
    let guide = &GUIDES[at];
    let mut values = vec![];
    if guide.kind != Kind::Ping {
        values.push(("Sign-in redirect URI", crate::sso::callback_url(&state).to_string()));
        values.push(("SCIM base URL", super::integrations::scim_base(&state)));
    }
    html(&GuidePage {
        chrome: Chrome::new(csrf, &portal, None),
        title: guide.title,
        body: &RENDERED[at],
        values,
    })
}
