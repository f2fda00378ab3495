//! `json`: a ~50 MB document of user records (nested objects, arrays, escaped strings, integers
//! and floats) is written as text, parsed into a `serde_json::Value`, edited (keys inserted and
//! removed in every record and in its nested objects, arrays filtered, strings rewritten) and
//! serialized back to a `String`; then everything is dropped.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::{hash_bytes, scaled, Rng};

const WORDS: [&str; 16] = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "fox\\\"trot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "caf\\u00e9",
    "lima",
    "mike",
    "novem\\nber",
    "oscar",
    "papa",
];
const KINDS: [&str; 4] = ["login", "logout", "upload", "purchase"];

pub fn run(scale: f64) -> u64 {
    let records = scaled(100_000, scale);
    let text = generate(records);
    let mut doc: Value = serde_json::from_str(&text).expect("the generated document parses");
    let text_len = text.len() as u64;
    drop(text);
    edit(&mut doc);
    let out = serde_json::to_string(&doc).expect("a Value serializes");
    drop(doc);
    hash_bytes(out.as_bytes()) ^ text_len.rotate_left(32)
}

fn words(rng: &mut Rng, out: &mut String, n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
}

/// The document's text: `{"version":1,"users":[record, ...]}`.
fn generate(records: usize) -> String {
    let mut rng = Rng::new(1);
    let mut s = String::new();
    s.push_str(r#"{"version":1,"users":["#);
    for id in 0..records {
        if id > 0 {
            s.push(',');
        }
        record(&mut rng, &mut s, id);
    }
    s.push_str("]}");
    s
}

fn record(rng: &mut Rng, s: &mut String, id: usize) {
    let score = rng.below(1 << 20) as f64 / 64.0;
    let _ = write!(
        s,
        r#"{{"id":{id},"name":"user-{id:06}-{:x}","active":{},"score":{score},"#,
        rng.next_u64(),
        id % 3 != 0
    );
    s.push_str(r#""tags":["#);
    for t in 0..rng.below(8) {
        let _ = write!(s, r#"{}"t{}""#, if t > 0 { "," } else { "" }, rng.below(50));
    }
    let (lat, lon) = (rng.below(18_000) as f64 / 100.0 - 90.0, rng.below(36_000) as f64 / 100.0 - 180.0);
    let _ = write!(
        s,
        r#"],"address":{{"street":"{} street","city":"city{}","zip":"{:05}","geo":{{"lat":{lat},"lon":{lon}}}}},"#,
        WORDS[rng.below(16) as usize],
        rng.below(500),
        rng.below(100_000)
    );
    s.push_str(r#""history":["#);
    for h in 0..rng.below(7) {
        let _ = write!(
            s,
            r#"{}{{"t":{},"kind":"{}","ok":{},"bytes":{}}}"#,
            if h > 0 { "," } else { "" },
            1_700_000_000 + rng.below(10_000_000),
            KINDS[rng.below(4) as usize],
            rng.below(10) != 0,
            rng.below(1 << 20)
        );
    }
    s.push_str(r#"],"notes":""#);
    let n = rng.below(24) as usize;
    words(rng, s, n);
    s.push_str("\"}");
}

/// Inserts and removes keys in every record and its nested objects, filters arrays, rewrites
/// strings.
fn edit(doc: &mut Value) {
    let Some(users) = doc.get_mut("users").and_then(Value::as_array_mut) else {
        panic!("the document has its users")
    };
    for user in users.iter_mut() {
        let Some(u) = user.as_object_mut() else { continue };
        let id = u.get("id").and_then(Value::as_u64).unwrap_or(0);
        if id % 3 == 0 {
            u.remove("tags");
        } else if let Some(Value::Array(tags)) = u.get_mut("tags") {
            tags.push(Value::String(format!("edited-{id}")));
        }
        if let Some(Value::Array(history)) = u.get_mut("history") {
            history.retain(|h| h.get("kind").and_then(Value::as_str) != Some("logout"));
            let bytes: u64 = history.iter().filter_map(|h| h.get("bytes")?.as_u64()).sum();
            u.insert("history_bytes".into(), json!(bytes));
        }
        if let Some(Value::Object(address)) = u.get_mut("address") {
            address.insert("country".into(), json!("XX"));
            address.remove("zip");
        }
        if id % 5 == 0 {
            if let Some(Value::String(notes)) = u.get_mut("notes") {
                *notes = notes.to_uppercase();
            }
        }
        u.insert("checked".into(), json!({"by": "bench", "round": id % 7, "ok": true}));
    }
}
