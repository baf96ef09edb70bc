//! The body each kind of receiver is sent, pure: Slack's incoming-webhook message (`text`
//! as the notification fallback, `blocks` for the message itself), Microsoft Teams'
//! workflow webhook message (one Adaptive Card attachment), and pontoon's own JSON for a
//! generic webhook with its HMAC-SHA256 signature.
//!
//! Signing: `X-Pontoon-Signature: sha256=<hex>` is HMAC-SHA256 with the receiver's secret
//! over `<X-Pontoon-Timestamp>.<body>` (the timestamp header, a dot, the exact bytes of
//! the body), so a captured request cannot be replayed later with a fresh timestamp.

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use super::event::{Event, Tone};

/// Slack's limit for the text of a section block.
const SLACK_SECTION_LIMIT: usize = 3000;

/// Header names of the generic webhook.
pub const SIGNATURE_HEADER: &str = "X-Pontoon-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Pontoon-Timestamp";
pub const EVENT_HEADER: &str = "X-Pontoon-Event";
pub const DELIVERY_HEADER: &str = "X-Pontoon-Delivery";

/// Slack treats `&`, `<` and `>` as markup (`<!channel>` would ping a whole channel).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cut(s: &str, limit: usize) -> String {
    if s.chars().count() <= limit {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A Slack incoming-webhook message.
pub fn slack(event: &Event) -> Value {
    let icon = match event.kind.tone() {
        Tone::Bad => ":red_circle:",
        Tone::Warning => ":large_orange_circle:",
        Tone::Good => ":large_green_circle:",
    };
    let title = event.title();
    let detail = event.detail();
    let mut section = format!("{icon} *{}*", slack_escape(&title));
    if !detail.is_empty() {
        section.push('\n');
        section.push_str(&slack_escape(&detail));
    }
    json!({
        "text": cut(&title, SLACK_SECTION_LIMIT),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(&section, SLACK_SECTION_LIMIT)}},
            {"type": "context", "elements": [{
                "type": "mrkdwn",
                "text": slack_escape(&format!(
                    "pontoon · {} · team {} · cluster {} · revision {}",
                    event.kind.name(), event.unit.team, event.unit.cluster, event.short_revision()
                )),
            }]},
        ],
    })
}

/// A Microsoft Teams workflow-webhook message: one Adaptive Card.
pub fn teams(event: &Event) -> Value {
    let color = match event.kind.tone() {
        Tone::Bad => "Attention",
        Tone::Warning => "Warning",
        Tone::Good => "Good",
    };
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": event.title(),
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true,
    })];
    let detail = event.detail();
    if !detail.is_empty() {
        body.push(json!({"type": "TextBlock", "text": detail, "wrap": true}));
    }
    body.push(json!({
        "type": "FactSet",
        "facts": [
            {"title": "Team", "value": event.unit.team.0},
            {"title": "Cluster", "value": event.unit.cluster.0},
            {"title": "Revision", "value": event.short_revision()},
            {"title": "Event", "value": event.kind.name()},
        ],
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

/// pontoon's own JSON: the event's name, unit, revision, title and detail, and the
/// fields of its kind; `id` is the same for every attempt to deliver it.
pub fn webhook(event: &Event) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(delivery_id(event)));
    out.insert("event".into(), json!(event.kind.name()));
    out.insert("team".into(), json!(event.unit.team.0));
    out.insert("cluster".into(), json!(event.unit.cluster.0));
    out.insert("revision".into(), json!(event.revision));
    out.insert("title".into(), json!(event.title()));
    out.insert("detail".into(), json!(event.detail()));
    out.extend(event.fields());
    Value::Object(out)
}

/// An identifier of the notification, the same on every retry: a receiver that got a
/// request whose answer was lost can tell it is the same one.
pub fn delivery_id(event: &Event) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(event.key().as_bytes());
    hex::encode(&digest[..12])
}

/// `sha256=<hex>`: HMAC-SHA256 with `secret` over `<timestamp>.<body>`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes a key of any length; this branch is never taken.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, TeamName, UnitId};
    use crate::notify::EventKind;

    fn failed() -> Event {
        Event {
            unit: UnitId {
                team: TeamName("payments".into()),
                cluster: ClusterName("prod".into()),
            },
            revision: "0123456789abcdef".into(),
            kind: EventKind::Failed {
                message: "Deployment payments/web: <!channel> & co".into(),
            },
        }
    }

    #[test]
    fn slack_has_a_fallback_text_and_escaped_mrkdwn_blocks() {
        let v = slack(&failed());
        assert_eq!(v["text"], "payments on prod failed at 0123456");
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        let text = v["blocks"][0]["text"]["text"].as_str().expect("text");
        assert!(text.contains("&lt;!channel&gt; &amp; co"), "{text}");
        assert!(!text.contains("<!channel>"), "{text}");
        assert_eq!(v["blocks"][1]["type"], "context");
    }

    #[test]
    fn teams_is_one_adaptive_card_in_a_message() {
        let v = teams(&failed());
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["body"][0]["type"], "TextBlock");
        assert_eq!(a["content"]["body"][2]["facts"][1]["value"], "prod");
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let body = br#"{"a":1}"#;
        let s = signature("k", "1700000000", body);
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(s, signature("k", "1700000001", body));
        assert_ne!(s, signature("k", "1700000000", br#"{"a":2}"#));
        assert_ne!(s, signature("other", "1700000000", body));
        // Known answer: HMAC-SHA256("k", "1700000000.{\"a\":1}").
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k").expect("key");
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            s,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn the_webhook_body_names_event_unit_and_fields() {
        let v = webhook(&failed());
        assert_eq!(v["event"], "failed");
        assert_eq!(v["team"], "payments");
        assert_eq!(v["cluster"], "prod");
        assert_eq!(v["revision"], "0123456789abcdef");
        assert_eq!(v["message"], "Deployment payments/web: <!channel> & co");
        assert_eq!(v["id"].as_str().map(str::len), Some(24));
    }
}
