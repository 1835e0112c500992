//! The HTML: server-rendered, no script, no outside resource. Every page
//! ends with the node that served it (`#served-by`, with `data-node` and
//! `data-role` for tests and tools). Element ids are the stable hooks:
//! `#headlines`, `#story-title`, `#story-body`, `#views`, `#published`,
//! `#new-story`, `#error`, `#not-found`.

use std::fmt::Write;
use std::time::Duration;

use crate::clock::utc;
use crate::served::Node;
use crate::store::{FrontPage, Published, Story};

/// What the footer says about where a page came from.
pub struct Origin<'a> {
    /// The node that served the page's read (`None`: no read, or the
    /// gateway named none).
    pub by: Option<&'a Node>,
    /// The Redis round trip behind the page.
    pub took: Option<Duration>,
    /// The gateway's address.
    pub gateway: &'a str,
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
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

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}\
header{display:flex;gap:1rem;align-items:baseline;border-bottom:1px solid #ddd;padding-bottom:.5rem}\
header a.home{font-weight:700;font-size:1.3rem;color:#222;text-decoration:none}\
ol#headlines{padding-left:1.5rem}li.headline{margin:.4rem 0}small,.meta{color:#666}\
footer{margin-top:2rem;border-top:1px solid #ddd;padding-top:.5rem;font-size:.9rem;color:#555}\
footer .role-replica{color:#07631f}footer .role-master{color:#8a4b00}\
#published{background:#eef8ee;border:1px solid #9c9;padding:.5rem 1rem}\
body.error h1{color:#a00}input,textarea{width:100%;font:inherit;box-sizing:border-box}textarea{height:10rem}";

/// A whole page.
fn layout(title: &str, class: &str, main: &str, origin: &Origin<'_>) -> String {
    let (node, role) = match origin.by {
        Some(n) => (n.addr.as_str(), n.role.as_str()),
        None => ("", "none"),
    };
    let took = origin
        .took
        .map(|d| format!(" in {:.1} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_default();
    let served = match origin.by {
        Some(n) => format!(
            "Served by <b class=\"role-{role}\">{}</b> ({}){took}, through the belay gateway at {}.",
            esc(&n.addr),
            esc(&n.role),
            esc(origin.gateway)
        ),
        None => format!(
            "No Redis node served this page{took} (the belay gateway is at {}).",
            esc(origin.gateway)
        ),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · newsroom</title><style>{STYLE}</style></head>\n\
         <body class=\"{class}\"><header><a class=\"home\" href=\"/\">newsroom</a>\
         <a href=\"/stories/new\">Write a story</a></header>\n<main>\n{main}\n</main>\n\
         <footer id=\"served-by\" data-node=\"{}\" data-role=\"{role}\">{served}</footer>\n</body></html>\n",
        esc(title),
        esc(node),
    )
}

/// `/`: the newest stories.
pub fn front(page: &FrontPage, origin: &Origin<'_>) -> String {
    let mut main = String::from("<h1>Latest stories</h1>\n");
    if page.headlines.is_empty() {
        main.push_str(
            "<p id=\"no-stories\">No stories yet. <a href=\"/stories/new\">Write the first one</a>.</p>\n",
        );
    }
    main.push_str("<ol id=\"headlines\">\n");
    for h in &page.headlines {
        let _ = writeln!(
            main,
            "<li class=\"headline\" data-id=\"{id}\"><a href=\"/stories/{id}\">{}</a> <small>{}</small></li>",
            esc(&h.title),
            utc(h.created_ms),
            id = esc(&h.id),
        );
    }
    main.push_str("</ol>\n");
    let _ = writeln!(
        main,
        "<p id=\"total\" class=\"meta\">{} stor{} in all.</p>",
        page.total,
        if page.total == 1 { "y" } else { "ies" }
    );
    layout("Latest stories", "front", &main, origin)
}

/// `/stories/<id>`, and the answer to publishing (with `published`).
pub fn story(s: &Story, published: Option<&Published>, origin: &Origin<'_>) -> String {
    let mut main = String::new();
    if let Some(p) = published {
        let what = if p.created {
            "Published"
        } else {
            "Already published (this story's id was sent before)"
        };
        let from = p
            .read_back_from
            .as_ref()
            .map(|n| format!("from {}", esc(&n.to_string())))
            .unwrap_or_else(|| "(the gateway named no node)".into());
        let retries = if p.attempts > 1 {
            format!(
                " It was sent {} times: the gateway answered {}.",
                p.attempts,
                esc(&p.retried_because.join("; "))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            main,
            "<section id=\"published\" data-created=\"{}\" data-attempts=\"{}\" data-took-ms=\"{}\">\
             <p>{what} in {} ms, and read back {from} on the connection that wrote it.{retries}</p></section>",
            p.created, p.attempts, p.took_ms, p.took_ms,
        );
    }
    let _ = write!(
        main,
        "<article id=\"story\" data-id=\"{}\"><h1 id=\"story-title\">{}</h1>\n\
         <p class=\"meta\">{} · <span id=\"views\">{}</span> view{}</p>\n<div id=\"story-body\">",
        esc(&s.id),
        esc(&s.title),
        utc(s.created_ms),
        s.views,
        if s.views == 1 { "" } else { "s" },
    );
    for para in s
        .body
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let _ = write!(main, "<p>{}</p>", esc(para).replace('\n', "<br>"));
    }
    main.push_str("</div></article>");
    layout(&s.title, "story", &main, origin)
}

/// `/stories/new`: the form. `id` makes a form sent twice publish once.
pub fn form(id: &str, title: &str, body: &str, problem: Option<&str>, gateway: &str) -> String {
    let problem = problem
        .map(|p| format!("<p id=\"form-problem\" class=\"error\">{}</p>\n", esc(p)))
        .unwrap_or_default();
    let main = format!(
        "<h1>Write a story</h1>\n{problem}<form id=\"new-story\" method=\"post\" action=\"/stories\">\
         <input type=\"hidden\" name=\"id\" value=\"{}\">\
         <p><label>Title<br><input name=\"title\" required maxlength=\"200\" value=\"{}\"></label></p>\
         <p><label>Story<br><textarea name=\"body\" maxlength=\"20000\">{}</textarea></label></p>\
         <p><button id=\"publish\" type=\"submit\">Publish</button></p></form>",
        esc(id),
        esc(title),
        esc(body)
    );
    let origin = Origin {
        by: None,
        took: None,
        gateway,
    };
    layout("Write a story", "new", &main, &origin)
}

/// A story the serving node does not have.
pub fn not_found(id: &str, origin: &Origin<'_>) -> String {
    let main = format!(
        "<h1 id=\"not-found\">No story {}</h1><p>The node that served this page has no such story.</p>",
        esc(id)
    );
    layout("Not found", "not-found", &main, origin)
}

/// Something went wrong: `headline` for people, `why` in the words of
/// whoever said no.
pub fn error(headline: &str, why: &str, origin: &Origin<'_>) -> String {
    let main = format!(
        "<h1 id=\"error\">{}</h1><p id=\"why\">{}</p>",
        esc(headline),
        esc(why)
    );
    layout(headline, "error", &main, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere_and_the_node_is_named() {
        let node = Node {
            addr: "127.0.0.1:6380".into(),
            role: "replica".into(),
        };
        let s = Story {
            id: "abc".into(),
            title: "<script>alert(1)</script>".into(),
            body: "one & two\n\n\"three\"".into(),
            created_ms: 0,
            views: 1,
        };
        let origin = Origin {
            by: Some(&node),
            took: None,
            gateway: "127.0.0.1:6390",
        };
        let html = story(&s, None, &origin);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(
            html.contains("<p>one &amp; two</p><p>&quot;three&quot;</p>"),
            "{html}"
        );
        assert!(
            html.contains("data-node=\"127.0.0.1:6380\" data-role=\"replica\""),
            "{html}"
        );
        assert!(html.contains(">1</span> view</p>"), "{html}");
    }
}
