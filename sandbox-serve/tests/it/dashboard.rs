//! The dashboard at `/` in headless Chromium against a real service: the
//! page asks for a token after a 401 and uses the one given, or takes it
//! from its address's fragment; it lists a sandbox with its status,
//! isolation and profile, shows a swap arriving live on the event stream
//! and in the module's version timeline, rolls back with its button, and
//! renders to a screenshot that is checked.

use std::time::Duration;

use serde_json::json;

use crate::browser::{find_chromium, Browser, VIEWPORT};
use crate::{add, config, example, start, trusted, BUILD, TOKEN};

/// How long the page may take to show what the API already answered.
const SHOW: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_a_sandbox_shows_a_swap_live_and_rolls_back() {
    let chromium = find_chromium().unwrap_or_else(|e| panic!("{e:#}"));
    let tmp = tempfile::tempdir().unwrap();
    let src = example("counter", tmp.path());
    let r = start(config(&tmp.path().join("data"), tmp.path())).await;
    let c = &r.client;
    let id = "dash";

    // The page itself: public, self-contained, not to be framed.
    let page = c.with_token(None).get("/").await.unwrap();
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(page
        .header("content-security-policy")
        .unwrap_or("")
        .contains("frame-ancestors 'none'"));
    assert!(page.text().contains("<title>sandbox serve</title>"));

    let a = tokio::time::timeout(BUILD, c.post_json("/v1/sandboxes", &trusted(id, &src)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text());
    add(c, id, 5).await;

    let mut browser = Browser::launch(&chromium).unwrap_or_else(|e| panic!("{e:#}"));

    // Without a token the page asks for one; given in its form, it is used.
    let url = format!("http://{}/", r.service.local_addr());
    let mut page = browser.open(&url).unwrap_or_else(|e| panic!("{e:#}"));
    page.wait_until(
        "the token form after a 401",
        "document.getElementById('token-dialog').open && document.getElementById('message').textContent !== ''",
        SHOW,
    );
    page.eval(
        &format!(
            r#"document.getElementById('token-input').value = '{TOKEN}';
               document.getElementById('token-form').requestSubmit(); true"#
        ),
        SHOW,
    )
    .unwrap();
    page.wait_until(
        "the sandbox once the token is given",
        &format!(
            r#"!document.getElementById('token-dialog').open && document.querySelector('tr[data-sandbox="{id}"]')"#
        ),
        SHOW,
    );
    drop(page);

    // A new tab (its own sessionStorage) given the token in the fragment.
    let url = format!("http://{}/#token={TOKEN}", r.service.local_addr());
    let mut page = browser.open(&url).unwrap_or_else(|e| panic!("{e:#}"));

    // Listed, with status, isolation and profile; the token left the address.
    let row = page.wait_until(
        "the sandbox",
        &format!(
            r#"(() => {{ const r = document.querySelector('tr[data-sandbox="{id}"]');
                 return r && r.querySelector('.status').textContent === 'running'
                   && [r.querySelector('.isolation').textContent, r.querySelector('.profile').textContent]; }})()"#
        ),
        SHOW,
    );
    assert_eq!(row, json!(["in-process", "trusted"]));
    let hash = page.eval("location.hash", SHOW).unwrap();
    assert_eq!(hash, json!(""), "the token stays in the address");
    page.wait_until(
        "the live event stream",
        "document.getElementById('live').className === 'on'",
        SHOW,
    );
    page.wait_until(
        "version 1 in the timeline",
        r#"document.querySelector('[data-module="counter"] .version.current[data-version="1"]')"#,
        SHOW,
    );
    // Two samples make a sparkline with a line in it.
    page.wait_until(
        "a memory sparkline",
        &format!(
            r#"(document.querySelector('tr[data-sandbox="{id}"] .spark.mem polyline')?.getAttribute('points') || '').split(' ').length >= 2"#
        ),
        SHOW,
    );

    // An edit and a reload through the API: the swap arrives live.
    let lib = src.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        text.replace(".checked_add(add)", ".checked_add(add * 2)"),
    )
    .unwrap();
    let a = tokio::time::timeout(
        BUILD,
        c.post_json(&format!("/v1/sandboxes/{id}/reload"), &json!(null)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let swapped = page.wait_until(
        "the swap in the live events",
        r#"[...document.querySelectorAll('#events li[data-event="swapped"]')].map(e => e.textContent).find(t => t.includes('counter 1 → 2'))"#,
        SHOW,
    );
    assert!(swapped.as_str().unwrap().contains(id), "{swapped}");
    page.wait_until(
        "version 2 current in the timeline, with a rollback button on version 1",
        r#"document.querySelector('[data-module="counter"] .version.current[data-version="2"]')
           && document.querySelector('[data-module="counter"] .version[data-version="1"] button.rollback')"#,
        SHOW,
    );
    page.wait_until(
        "the swap in the module's history",
        r#"[...document.querySelectorAll('[data-module="counter"] .history li')].some(l => l.textContent.includes('swapped counter 1 → 2'))"#,
        SHOW,
    );

    let png = page.screenshot().unwrap_or_else(|e| panic!("{e:#}"));
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    check_png(&png, &path);

    // The rollback button (its confirmation answered yes).
    page.eval(
        r#"window.confirm = () => true;
           document.querySelector('[data-module="counter"] .version[data-version="1"] button.rollback').click(); true"#,
        SHOW,
    )
    .unwrap();
    page.wait_until(
        "the rollback in the live events and the table",
        &format!(
            r#"document.querySelector('#events li[data-event="rollback"]')
               && document.querySelector('tr[data-sandbox="{id}"]').textContent.includes('counter v1')"#
        ),
        SHOW,
    );
    let info = c.get(&format!("/v1/sandboxes/{id}")).await.unwrap().json();
    assert_eq!(info["modules"][0]["version"], 1, "{info}");
    // State carried through the swap and the rollback: 5, then +1 on v1.
    assert_eq!(add(c, id, 1).await, json!({"value": 6, "calls": 2}));
}

/// A PNG of the whole viewport with something drawn on it: its signature,
/// its size (the window's), and more bytes than a blank page compresses to.
fn check_png(png: &[u8], path: &std::path::Path) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), VIEWPORT, "{}", path.display());
    assert!(
        png.len() > 20_000,
        "{} is {} bytes: nearly blank",
        path.display(),
        png.len()
    );
}
