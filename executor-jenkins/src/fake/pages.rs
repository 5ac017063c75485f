//! The pages Jenkins answers errors with, as far as a client can see them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// Jetty's error page for `HttpServletResponse.sendError(status, message)` (what
/// `HttpResponses.error` and `CrumbFilter` answer): the message in the title and in an
/// `<h2>`, no Jenkins layout.
pub(crate) fn send_error(status: StatusCode, message: &str) -> Response {
    let m = html_escape(message);
    let code = status.as_u16();
    let body = format!(
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=ISO-8859-1\"/>\n\
         <title>Error {code} {m}</title>\n</head>\n<body><h2>HTTP ERROR {code} {m}</h2>\n\
         <table>\n<tr><th>URI:</th><td>/</td></tr>\n<tr><th>STATUS:</th><td>{code}</td></tr>\n\
         <tr><th>MESSAGE:</th><td>{m}</td></tr>\n</table>\n</body>\n</html>\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=iso-8859-1")],
        body,
    )
        .into_response()
}

/// A page rendered with Jenkins' layout (`lib/layout/layout.jelly`), which puts the
/// crumb header and a crumb into every page's `<head>`: so every such page contains the
/// word "crumb", whatever it is about.
fn layout_page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html class=\"\"><head resURL=\"/static/fake\" data-rooturl=\"\" \
         data-resurl=\"/static/fake\" data-extensions-available=\"true\" data-unit-test=\"false\" \
         data-imagesurl=\"/static/fake/images\" data-crumb-header=\"Jenkins-Crumb\" \
         data-crumb-value=\"0f1e2d3c4b5a69788796a5b4c3d2e1f0\">\
         <title>{} [Jenkins]</title></head><body id=\"jenkins\" class=\"yui-skin-sam\">\
         <div id=\"main-panel\">{body_html}</div></body></html>",
        html_escape(title)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=utf-8")],
        body,
    )
        .into_response()
}

/// The 403 of a missing permission: core's `AccessDeniedException3` rendered by
/// `jenkins/model/Jenkins/accessDenied.jelly` inside the layout, with Jenkins' message
/// "`<user>` is missing the `<Group>/<Permission>` permission".
pub(crate) fn access_denied(user: &str, permission: &str) -> Response {
    let mut r = layout_page(
        StatusCode::FORBIDDEN,
        "Access Denied",
        &format!(
            "<h1>Access Denied</h1><p>{} is missing the {} permission</p>",
            html_escape(user),
            html_escape(permission)
        ),
    );
    r.headers_mut().insert(
        "X-You-Are-Authenticated-As",
        HeaderValue::from_str(user).unwrap_or(HeaderValue::from_static("?")),
    );
    r
}

/// `hudson.model.Failure` rendered by `AbstractModelObject/error.jelly`: status 400, the
/// message in an `X-Error` header and in a layout page. Header values go out as
/// ISO-8859-1, so characters outside it (Jenkins' ‘ ’ quotes) arrive as `?`.
pub(crate) fn failure(message: &str) -> Response {
    let mut r = layout_page(
        StatusCode::BAD_REQUEST,
        "Error",
        &format!("<h1>Error</h1><p>{}</p>", html_escape(message)),
    );
    let latin1: String = message
        .chars()
        .map(|c| if (c as u32) < 256 { c } else { '?' })
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&latin1.chars().map(|c| c as u8).collect::<Vec<_>>()) {
        r.headers_mut().insert("X-Error", v);
    }
    r
}

/// A 404 page.
pub(crate) fn not_found() -> Response {
    send_error(StatusCode::NOT_FOUND, "Not Found")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
