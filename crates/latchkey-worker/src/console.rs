//! The console on `latchkey serve` (`/console`): one server-rendered page for
//! the on-call engineer (queue, workers, the codes that need a human, recent
//! outcomes, a search by access code, the dead letters with a retry button),
//! refreshing itself. No script, no build step.
//!
//! Sign-in takes an API token once (the same tokens as `/v1`: read to look,
//! write to retry) and answers a session cookie that holds no secret: the
//! token's name, an expiry and an HMAC keyed with the token's digest, so any
//! replica can check it and changing or removing the token ends its sessions.
//! Forms that change something carry a CSRF token derived the same way, and
//! are refused when the request comes from another origin; the cookie is
//! `SameSite=Strict` and `HttpOnly`. PINs are never shown.

use std::{
    fmt::Write as _,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    Form, Router,
    extract::{Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use latchkey_core::{Outcome, OutcomeState, shown};
use latchkey_store::{Reconciliations, error_chain};
use sha2::Sha256;

use crate::api::{Api, Role, Tokens};

/// The session cookie's name.
const COOKIE: &str = "latchkey_console";
/// How long a sign-in lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// The page refreshes itself this often (seconds).
const REFRESH_SECS: u32 = 10;
/// Rows per table.
const ROWS: usize = 50;
/// A worker is alive when it sent a heartbeat this recently.
const ALIVE: Duration = Duration::from_secs(30);

/// The `/console` routes, on the API's state (its store and tokens).
pub(crate) fn router(console: Api) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/dead/retry", post(retry))
        .route("/console/console.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], CSS) }))
        .layer(middleware::from_fn(headers))
        .with_state(console)
}

async fn headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    // (`same-origin`: with `no-referrer`, browsers send `Origin: null` on the
    // page's own forms, and the origin check could not tell them from a
    // stranger's)
    crate::api::set_security_headers(
        r.headers_mut(),
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "same-origin",
    );
    r
}

/// Who is signed in.
struct Session {
    name: String,
    role: Role,
    /// Unix seconds.
    expires: i64,
    digest: [u8; 32],
}

fn mac(digest: &[u8; 32], purpose: &str, name: &str, expires: i64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(digest).expect("HMAC takes any key length");
    m.update(format!("latchkey-console {purpose}\n{name}\n{expires}").as_bytes());
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

impl Session {
    fn cookie_value(&self) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(&self.name),
            self.expires,
            mac(&self.digest, "session", &self.name, self.expires)
        )
    }

    fn csrf(&self) -> String {
        mac(&self.digest, "csrf", &self.name, self.expires)
    }

    /// The session a cookie value stands for, if it is one this token file
    /// signed and it has not expired.
    fn from_cookie(value: &str, tokens: &Tokens) -> Option<Self> {
        let mut parts = value.splitn(3, '.');
        let name = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let presented = parts.next()?;
        if expires <= Utc::now().timestamp() {
            return None;
        }
        tokens.named(&name).find_map(|(role, digest)| {
            let expected = mac(digest, "session", &name, expires);
            bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), presented.as_bytes())).then(|| Session {
                name: name.clone(),
                role,
                expires,
                digest: *digest,
            })
        })
    }

    fn from_request(headers: &HeaderMap, tokens: &Arc<RwLock<Tokens>>) -> Option<Self> {
        let tokens = tokens.read().unwrap_or_else(|e| e.into_inner());
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .find_map(|v| Self::from_cookie(v, &tokens))
    }
}

/// Whether a form post comes from this site: an `Origin` (or, without one, a
/// `Referer`) naming another host is refused. Browsers send `Origin` on every
/// cross-site POST.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let from = headers.get(header::ORIGIN).or_else(|| headers.get(header::REFERER)).and_then(|v| v.to_str().ok());
    match from {
        None => true,
        Some(from) => {
            let rest = from.split_once("://").map_or(from, |(_, rest)| rest);
            rest.split('/').next() == Some(host)
        }
    }
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, html_page("Refused", &format!("<p class=\"notice bad\">{}</p>", esc(why)), None))
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Signs in with an API token: sets the session cookie, back to the page.
async fn login(State(console): State<Api>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        return forbidden("this form must be sent from the console's own page");
    }
    let found = console.tokens.read().unwrap_or_else(|e| e.into_inner()).find_session(form.token.trim());
    let Some((name, role, digest)) = found else {
        return (
            StatusCode::UNAUTHORIZED,
            html_page("Sign in", &login_form(Some("That token is not one of LATCHKEY_API_TOKENS_FILE.")), None),
        )
            .into_response();
    };
    let session = Session { name, role, expires: Utc::now().timestamp() + SESSION.as_secs() as i64, digest };
    tracing::info!(token = %session.name, "console: signed in");
    let secure = headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes() == b"https");
    let cookie = format!(
        "{COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.cookie_value(),
        SESSION.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut r = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return forbidden("this form must be sent from the console's own page");
    }
    let mut r = Redirect::to("/console").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("latchkey_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

#[derive(serde::Deserialize)]
struct RetryForm {
    id: String,
    csrf: String,
}

/// Re-queues one dead letter (write role, same origin, CSRF token).
async fn retry(State(console): State<Api>, headers: HeaderMap, Form(form): Form<RetryForm>) -> Response {
    let Some(session) = Session::from_request(&headers, &console.tokens) else {
        return Redirect::to("/console").into_response();
    };
    let csrf_ok = bool::from(subtle::ConstantTimeEq::ct_eq(session.csrf().as_bytes(), form.csrf.as_bytes()));
    if !same_origin(&headers) || !csrf_ok {
        return forbidden("this form must be sent from the console's own page");
    }
    if session.role != Role::Write {
        return forbidden("retrying a dead letter needs a write token; this one may only read");
    }
    match console.store.queue().requeue_dead(std::slice::from_ref(&form.id)).await {
        Ok(done) => {
            tracing::info!(token = %session.name, job = %shown(&form.id), requeued = done.len(), "console: dead letter retried");
            let notice = if done.is_empty() { "gone" } else { "retried" };
            Redirect::to(&format!("/console?{notice}={}", urlencode(&form.id))).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "console: could not retry a dead letter");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                html_page("Unavailable", "<p class=\"notice bad\">Redis is not reachable; try again.</p>", None),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct PageQuery {
    /// Search: an access code id.
    code: Option<String>,
    /// Filter of recent outcomes by state.
    state: Option<String>,
    /// A dead letter just retried.
    retried: Option<String>,
    /// A dead letter that was not dead any more.
    gone: Option<String>,
}

/// The page: sign-in without a session, the dashboard with one.
async fn page(State(console): State<Api>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let Some(session) = Session::from_request(&headers, &console.tokens) else {
        return html_page("Sign in", &login_form(None), None).into_response();
    };
    match dashboard(&console.store, &session, &q).await {
        Ok(body) => html_page("latchkey", &body, Some(REFRESH_SECS)).into_response(),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "console: redis not reachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                html_page(
                    "Unavailable",
                    "<p class=\"notice bad\">Redis is not reachable; this page tries again by itself.</p>",
                    Some(REFRESH_SECS),
                ),
            )
                .into_response()
        }
    }
}

async fn dashboard(store: &Reconciliations, session: &Session, q: &PageQuery) -> latchkey_store::Result<String> {
    let queue = store.queue();
    let filter = q.state.as_deref().filter(|s| !s.is_empty());
    // Every read the page needs, at once (none depends on another).
    let (depth, due, workers, dead, (attention_total, attention), recent) = tokio::try_join!(
        queue.depth(),
        queue.due(),
        queue.workers_alive(ALIVE),
        queue.dead_letters(ROWS),
        store.needing_attention(ROWS),
        store.recent_outcomes(2000, if filter.is_some() { 500 } else { ROWS }),
    )?;
    let recent: Vec<Outcome> =
        recent.into_iter().filter(|o| filter.is_none_or(|f| o.state.as_str() == f)).take(ROWS).collect();

    let mut b = String::new();
    let _ = write!(
        b,
        "<header><h1>latchkey</h1><span>signed in as <b>{}</b> ({})</span>\
         <form method=\"post\" action=\"/console/logout\"><button>Sign out</button></form></header>",
        esc(&session.name),
        if session.role == Role::Write { "write" } else { "read" }
    );
    if let Some(id) = &q.retried {
        let _ = write!(b, "<p class=\"notice\" id=\"notice\">Dead letter {} re-queued.</p>", esc(&shown(id)));
    }
    if let Some(id) = &q.gone {
        let _ = write!(b, "<p class=\"notice\" id=\"notice\">{} was not a dead letter any more.</p>", esc(&shown(id)));
    }

    // The queue at a glance.
    let _ = write!(
        b,
        "<section id=\"queue\"><h2>Queue</h2><dl class=\"stats\">\
         <div><dt>Due</dt><dd>{due}</dd></div><div><dt>Ready</dt><dd>{}</dd></div>\
         <div><dt>Scheduled</dt><dd>{}</dd></div><div><dt>Leased</dt><dd>{}</dd></div>\
         <div><dt>Dead letters</dt><dd>{}</dd></div><div><dt>Workers alive</dt><dd>{}</dd></div>\
         <div><dt>Need a human</dt><dd>{attention_total}</dd></div></dl>",
        depth.ready,
        depth.scheduled,
        depth.leased,
        depth.dead,
        workers.len()
    );
    if workers.is_empty() {
        b.push_str(
            "<p class=\"notice bad\">No worker has sent a heartbeat in the last 30 s: nothing is being reconciled.</p>",
        );
    } else {
        let _ = write!(
            b,
            "<p class=\"small\">Workers: {}</p>",
            workers.iter().map(|w| esc(&shown(w))).collect::<Vec<_>>().join(", ")
        );
    }
    b.push_str("</section>");

    // Search.
    let searched = q.code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let _ = write!(
        b,
        "<section id=\"search\"><h2>Access code</h2><form method=\"get\" action=\"/console\">\
         <input name=\"code\" placeholder=\"access_code_id\" value=\"{}\" aria-label=\"access code id\">\
         <button>Look up</button></form>",
        esc(searched.unwrap_or(""))
    );
    if let Some(id) = searched {
        if let Some(rule) = latchkey_core::id_rule_broken(id) {
            let _ = write!(b, "<p class=\"notice bad\">Not an access code id: {}.</p>", esc(rule));
        } else {
            let (outcome, history) = tokio::try_join!(store.outcome(id), store.history(id))?;
            match outcome {
                None => {
                    let _ = write!(
                        b,
                        "<p class=\"notice\">No desired state was ever recorded for {} (or its records expired).</p>",
                        esc(&shown(id))
                    );
                }
                Some(o) => b.push_str(&code_detail(&o, &history)),
            }
        }
    }
    b.push_str("</section>");

    // The codes that need a human.
    let _ = write!(b, "<section id=\"attention\"><h2>Need a human ({attention_total})</h2>");
    if attention.is_empty() {
        b.push_str("<p class=\"small\">None: every code's newest desired state succeeded or is on its way.</p>");
    } else {
        b.push_str(&outcome_table(&attention));
    }
    b.push_str("</section>");

    // Recent outcomes, by state.
    b.push_str("<section id=\"recent\"><h2>Recent outcomes</h2><form method=\"get\" action=\"/console\"><select name=\"state\" aria-label=\"state\"><option value=\"\">every state</option>");
    for s in OutcomeState::ALL {
        let _ = write!(
            b,
            "<option value=\"{0}\"{1}>{0}</option>",
            s.as_str(),
            if filter == Some(s.as_str()) { " selected" } else { "" }
        );
    }
    b.push_str("</select><button>Filter</button></form>");
    if recent.is_empty() {
        b.push_str("<p class=\"small\">No outcome among the recent changes.</p>");
    } else {
        b.push_str(&outcome_table(&recent));
    }
    b.push_str("</section>");

    // Dead letters.
    let _ = write!(b, "<section id=\"dead\"><h2>Dead letters ({})</h2>", depth.dead);
    if dead.is_empty() {
        b.push_str("<p class=\"small\">None.</p>");
    } else {
        b.push_str(
            "<table><thead><tr><th>Job</th><th>Attempts</th><th>Why</th><th>Died</th><th></th></tr></thead><tbody>",
        );
        let csrf = session.csrf();
        for d in &dead {
            let died = DateTime::<Utc>::from_timestamp_millis(d.dead_at_ms as i64).map(ago).unwrap_or_default();
            let action = if session.role == Role::Write {
                format!(
                    "<form method=\"post\" action=\"/console/dead/retry\"><input type=\"hidden\" name=\"id\" value=\"{}\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Retry</button></form>",
                    esc(&d.id),
                    csrf
                )
            } else {
                String::new()
            };
            let _ = write!(
                b,
                "<tr class=\"dead-letter\"><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                esc(&shown(&d.id)),
                d.attempts,
                esc(&d.error),
                died
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    Ok(b)
}

fn state_badge(state: OutcomeState) -> String {
    format!("<span class=\"state {0}\">{0}</span>", state.as_str())
}

fn outcome_table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "<table><thead><tr><th>Access code</th><th>Generation</th><th>State</th><th>Why</th><th>Updated</th></tr></thead><tbody>",
    );
    for o in outcomes {
        let why = o.error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)).unwrap_or_default();
        let _ = write!(
            t,
            "<tr><td class=\"id\"><a href=\"/console?code={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            urlencode(&o.access_code_id),
            esc(&shown(&o.access_code_id)),
            o.generation,
            state_badge(o.state),
            esc(&why),
            ago(o.updated_at)
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// One access code: its outcome, what Seam last showed (never the PIN), its history.
fn code_detail(o: &Outcome, history: &[latchkey_core::HistoryEntry]) -> String {
    let mut d = String::from("<div class=\"detail\" id=\"code-detail\"><dl>");
    let mut row = |k: &str, v: String| {
        let _ = write!(d, "<dt>{k}</dt><dd>{v}</dd>");
    };
    row("Access code", format!("<span class=\"id\">{}</span>", esc(&shown(&o.access_code_id))));
    row("State", state_badge(o.state));
    row("Generation", o.generation.to_string());
    if let Some(e) = &o.error {
        let codes = if e.error_codes.is_empty() { String::new() } else { format!(" ({})", e.error_codes.join(", ")) };
        row("Why", esc(&format!("{}: {}{codes}", e.kind, e.message)));
    }
    row("Enqueued", ago(o.enqueued_at));
    if let Some(f) = o.finished_at {
        row("Finished", ago(f));
    }
    row("Updates sent", o.attempts.to_string());
    row("Polls", o.polls.to_string());
    if let Some(device) = &o.device_id {
        row("Device", esc(&shown(device)));
    }
    if let Some(drift) = &o.last_drift {
        row(
            "Last drift",
            esc(&format!("{} ({})", drift.differences.join(", "), drift.at.format("%Y-%m-%d %H:%M:%S UTC"))),
        );
    }
    match &o.last_seen {
        Some(seen) => row("Last seen at Seam", esc(&seen.summary())),
        None => row("Last seen at Seam", "not read yet".into()),
    }
    d.push_str("</dl>");
    if !history.is_empty() {
        d.push_str("<h3>History</h3><table><thead><tr><th>When</th><th>Generation</th><th>State</th><th>Why</th><th>Seen at Seam</th></tr></thead><tbody>");
        for h in history {
            let _ = write!(
                d,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                h.at.format("%Y-%m-%d %H:%M:%S UTC"),
                h.generation,
                state_badge(h.state),
                esc(h.error.as_deref().unwrap_or("")),
                esc(h.seen.as_deref().unwrap_or(""))
            );
        }
        d.push_str("</tbody></table>");
    }
    d.push_str("</div>");
    d
}

fn login_form(error: Option<&str>) -> String {
    let mut f = String::from("<section id=\"login\"><h2>Sign in</h2>");
    if let Some(e) = error {
        let _ = write!(f, "<p class=\"notice bad\">{}</p>", esc(e));
    }
    f.push_str(
        "<form method=\"post\" action=\"/console/login\"><label>API token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label>\
         <button>Sign in</button></form><p class=\"small\">A token of LATCHKEY_API_TOKENS_FILE: \
         a read token to look, a write token to retry dead letters.</p></section>",
    );
    f
}

fn html_page(title: &str, body: &str, refresh: Option<u32>) -> axum::response::Html<String> {
    let refresh = refresh.map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">")).unwrap_or_default();
    axum::response::Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · latchkey console</title><link rel=\"stylesheet\" href=\"/console/console.css\"></head>\
         <body><main>{body}</main><footer>Updated {} · refreshes every {REFRESH_SECS} s</footer></body></html>",
        esc(title),
        Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    ))
}

/// How long ago, for a person ("3 min ago"), with the exact time as a tooltip.
fn ago(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds();
    let text = match secs {
        s if s < 0 => "in the future".to_string(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86400),
    };
    format!("<time datetime=\"{}\" title=\"{}\">{text}</time>", t.to_rfc3339(), t.format("%Y-%m-%d %H:%M:%S UTC"))
}

/// HTML-escapes text for an element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

const CSS: &str = r#"
:root { font-family: system-ui, sans-serif; color: #1b1f24; background: #f6f7f9; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
header { display: flex; gap: 1rem; align-items: baseline; }
header h1 { margin: 0; font-size: 1.4rem; }
header form { margin-left: auto; }
section { background: #fff; border: 1px solid #d8dce1; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; }
h2 { font-size: 1.1rem; margin: 0 0 0.6rem; }
dl.stats { display: flex; flex-wrap: wrap; gap: 1.5rem; margin: 0; }
dl.stats dt { font-size: 0.8rem; color: #57606a; }
dl.stats dd { margin: 0; font-size: 1.5rem; font-variant-numeric: tabular-nums; }
.detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
.detail dd { margin: 0; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid #eaecef; vertical-align: top; }
.id { font-family: ui-monospace, monospace; }
.state { padding: 0.05rem 0.4rem; border-radius: 4px; background: #eaecef; }
.state.succeeded, .state.expired { background: #d1f0d9; }
.state.failed, .state.rejected, .state.timed_out { background: #ffd8d3; }
.state.applying, .state.verifying, .state.pending, .state.scheduled { background: #fff1c2; }
.notice { background: #eef4ff; padding: 0.4rem 0.6rem; border-radius: 4px; }
.notice.bad { background: #ffe3e0; }
.small { color: #57606a; font-size: 0.85rem; }
input[name=code] { width: 24rem; max-width: 70vw; font-family: ui-monospace, monospace; }
footer { text-align: center; color: #57606a; font-size: 0.8rem; padding: 1rem; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse("oncall read tok_oncall_0123456789\nops write tok_ops_01234567890\n").unwrap()
    }

    #[test]
    fn a_session_cookie_is_the_token_name_an_expiry_and_a_mac_never_the_token() {
        let t = tokens();
        let (name, role, digest) = t.find_session("tok_ops_01234567890").unwrap();
        let s = Session { name, role, expires: Utc::now().timestamp() + 60, digest };
        let cookie = s.cookie_value();
        assert!(!cookie.contains("tok_ops"), "{cookie}");
        let back = Session::from_cookie(&cookie, &t).unwrap();
        assert_eq!((back.name.as_str(), back.role), ("ops", Role::Write));
        // Tampered, expired, or signed by a token that is gone: no session.
        let forged = cookie.replacen(&URL_SAFE_NO_PAD.encode("ops"), &URL_SAFE_NO_PAD.encode("oncall"), 1);
        assert!(Session::from_cookie(&forged, &t).is_none());
        let old = Session { expires: Utc::now().timestamp() - 1, ..s };
        assert!(Session::from_cookie(&old.cookie_value(), &t).is_none());
        let rotated = Tokens::parse("ops write tok_ops_rotated_0123\n").unwrap();
        assert!(Session::from_cookie(&cookie, &rotated).is_none());
    }

    #[test]
    fn forms_from_another_origin_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("latchkey.example:8080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://latchkey.example:8080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<script>\"x\"&'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;");
        assert_eq!(urlencode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
