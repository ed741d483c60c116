//! The behaviour every adapter must show, whatever its upstream: run by each adapter's tests
//! through [`conformance_tests!`](crate::conformance_tests), with fixtures in its upstream's
//! format. Each function panics with what is wrong.

use crate::prelude::*;
use serde_json::{Value, json};

use super::{
    all_values, body_json, chat_request, embeddings_request, exported_build_request, image_part,
    inline_image, invalid_request, malformed_response, mentions, message, rate_limited, response,
    stream_event, text_part, upstream_failure,
};
use crate::capabilities::CAPABILITIES;
use crate::types::{
    AdapterError, ChatRequest, ContentPart, HttpResponse, ImageSource, JsonSchema, ResponseFormat,
};
use crate::{Adapter, MAX_ERROR_BYTES};

/// What the conformance tests need to know of an adapter's upstream format.
pub struct Fixtures {
    /// Settings the adapter is configured with for every test (a JSON object's text), so that
    /// every capability it declares is available; `None` for its defaults.
    pub settings: Option<&'static str>,
    /// A complete 2xx answer whose content is "Hello".
    pub answer: &'static str,
    /// The last events of a stream (SSE event name, data), in order: one of them carries the
    /// finish reason, and the upstream ends with the last.
    pub stream_end: &'static [(Option<&'static str>, &'static str)],
    /// Error responses (status, body) and the `upstream-failure.code` each must give.
    pub error_codes: &'static [(u16, &'static str, &'static str)],
    /// With the "embeddings" capability: the 2xx answer to the embeddings request for inputs
    /// ["a", "b"], holding the vectors [0.5, -1.0] and [0.25, 2.0] (in the upstream's order,
    /// which may differ) and 7 input tokens.
    pub embeddings_answer: Option<&'static str>,
}

fn adapter<A: Adapter>(fixtures: &Fixtures) -> A {
    match fixtures.settings {
        Some(settings) => A::configure(settings).expect("the fixture settings are accepted"),
        None => A::default(),
    }
}

fn declares<A: Adapter>(name: &str) -> bool {
    A::describe().capabilities.iter().any(|have| have == name)
}

fn request() -> ChatRequest {
    chat_request("conformance-model")
}

/// `describe` names the adapter and its version, gives an http(s) base URL, and lists known
/// capabilities once each, "embeddings" exactly when the fixtures have an embeddings answer
/// and "settings" whenever the fixtures configure the adapter.
pub fn describe_is_sane<A: Adapter>(fixtures: &Fixtures) {
    let info = A::describe();
    assert!(!info.name.is_empty(), "describe().name is empty");
    assert!(
        info.version.split('.').count() == 3
            && info
                .version
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "describe().version {:?} is not MAJOR.MINOR.PATCH",
        info.version
    );
    assert!(
        info.default_base_url.starts_with("https://")
            || info.default_base_url.starts_with("http://"),
        "default base URL {:?} is not http(s)",
        info.default_base_url
    );
    for (index, name) in info.capabilities.iter().enumerate() {
        assert!(
            CAPABILITIES.contains(&name.as_str()),
            "capability {name:?} is not one contract 0.3.0 defines"
        );
        assert!(
            !info.capabilities[..index].contains(name),
            "capability {name:?} is listed twice"
        );
    }
    assert_eq!(
        declares::<A>("embeddings"),
        fixtures.embeddings_answer.is_some(),
        "\"embeddings\" is declared exactly when the fixtures have an embeddings answer"
    );
    if fixtures.settings.is_some() {
        assert!(
            declares::<A>("settings"),
            "the fixtures configure an adapter that does not declare \"settings\""
        );
    }
}

/// `configure` accepts an empty table, and refuses an unknown key by name; an adapter
/// without the "settings" capability refuses every key.
pub fn settings_are_checked<A: Adapter>(_: &Fixtures) {
    assert!(
        A::configure("{}").is_ok(),
        "configure refuses empty settings"
    );
    let error = A::configure(r#"{"zq_no_such_setting": 1}"#)
        .err()
        .expect("an unknown setting is refused");
    assert!(
        error.contains("zq_no_such_setting"),
        "the refusal of an unknown setting does not name it: {error}"
    );
    assert!(
        A::configure("[1]").is_err(),
        "settings that are not a table"
    );
}

/// A plain request builds, with a path under the base URL.
pub fn a_plain_request_builds<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    for stream in [false, true] {
        let mut request = request();
        request.stream = stream && A::describe().supports_streaming;
        let built = exported_build_request(&adapter, &request).expect("a plain request builds");
        assert!(built.path.starts_with('/'), "path {:?}", built.path);
        assert!(!built.method.is_empty());
    }
}

/// A parse function of an adapter, with its result dropped.
type Parser<'a> = Box<dyn Fn(&HttpResponse) -> Result<(), AdapterError> + 'a>;

/// 429 is rate limited with the whole seconds of `retry-after`; every other non-2xx status is
/// an upstream failure with that status and the body's text — for chat answers, model
/// listings and embeddings alike.
pub fn statuses_map_to_errors<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    let mut parsers: Vec<(&str, Parser)> = vec![(
        "parse-response",
        Box::new(|r| adapter.parse_response(r).map(drop)),
    )];
    if adapter.build_models_request(None).is_some() {
        parsers.push((
            "parse-models-response",
            Box::new(|r| adapter.parse_models_response(r).map(drop)),
        ));
    }
    if declares::<A>("embeddings") {
        parsers.push((
            "parse-embeddings-response",
            Box::new(|r| adapter.parse_embeddings_response(r).map(drop)),
        ));
    }
    for (name, parse) in &parsers {
        for status in [400, 401, 403, 404, 409, 422, 500, 502, 503, 504, 529] {
            let failure = upstream_failure(parse(&response(status, "upstream said no")));
            assert_eq!(failure.status, status, "{name}: status {status}");
            assert_eq!(
                failure.message, "upstream said no",
                "{name}: status {status}"
            );
        }
        let mut limited = response(429, "slow down");
        limited.headers = vec![("retry-after".into(), "7".into())];
        let limit = rate_limited(parse(&limited));
        assert_eq!(limit.retry_after_secs, Some(7), "{name}");
        assert!(
            limit.message.contains("slow down"),
            "{name}: {}",
            limit.message
        );
        limited.headers = vec![("retry-after".into(), "Wed, 21 Oct 2026 07:28:00 GMT".into())];
        assert_eq!(
            rate_limited(parse(&limited)).retry_after_secs,
            None,
            "{name}"
        );
    }
}

/// The fixtures' error responses give their codes.
pub fn error_codes_are_read<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    assert!(!fixtures.error_codes.is_empty(), "no error-code fixtures");
    for (status, body, code) in fixtures.error_codes {
        let failure = upstream_failure(adapter.parse_response(&response(*status, body)));
        assert_eq!(failure.code.as_deref(), Some(*code), "{status} {body}");
    }
}

/// Error text is not cut short of what the host keeps: the host scrubs keys out of it, then
/// cuts it itself.
pub fn long_error_text_reaches_the_host<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    let text = "x".repeat(5000);
    let failure = upstream_failure(adapter.parse_response(&response(500, &text)));
    assert_eq!(failure.message, text);
    let failure = upstream_failure(adapter.parse_response(&response(500, &"y".repeat(100_000))));
    assert!(failure.message.len() <= MAX_ERROR_BYTES);
}

/// The fixture answer parses to "Hello"; a 2xx body that is not JSON, or is cut short, is a
/// malformed response, never a panic or an empty answer.
pub fn bad_2xx_bodies_are_malformed<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    let answer = adapter
        .parse_response(&response(200, fixtures.answer))
        .expect("the fixture answer parses");
    assert_eq!(answer.content, "Hello");
    for body in [
        "<html><body>Bad Gateway</body></html>",
        "",
        &fixtures.answer[..fixtures.answer.len() / 2],
    ] {
        malformed_response(adapter.parse_response(&response(200, body)));
    }
}

/// The stream's end: only the last event is `done`, and a finish reason comes on the way.
pub fn the_stream_ends_where_the_upstream_does<A: Adapter>(fixtures: &Fixtures) {
    if !A::describe().supports_streaming {
        return;
    }
    let adapter = adapter::<A>(fixtures);
    let mut finished = false;
    let last = fixtures.stream_end.len() - 1;
    for (index, (name, data)) in fixtures.stream_end.iter().enumerate() {
        let chunk = adapter
            .parse_stream_event(&stream_event(*name, data))
            .expect("the fixture events parse");
        let done = chunk.as_ref().is_some_and(|chunk| chunk.done);
        assert_eq!(done, index == last, "event {index} ({data}): done = {done}");
        finished |= chunk.is_some_and(|chunk| chunk.finish.is_some());
    }
    assert!(
        finished,
        "no event of the stream's end carried a finish reason"
    );
}

/// Inline images (with "images") and image URLs (with "image-urls") reach the body: the
/// base64 text or the URL, in a string of the upstream's image form.
pub fn images_reach_the_body<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    for (capability, source, needle) in [
        (
            "images",
            inline_image("image/png", "iVBORw0KGgoZQ"),
            "iVBORw0KGgoZQ",
        ),
        (
            "image-urls",
            ImageSource::Url("https://example.com/zq-cat.png".into()),
            "https://example.com/zq-cat.png",
        ),
    ] {
        let mut request = request();
        request.messages[0]
            .content
            .extend([image_part(source), text_part("what is this?")]);
        let built = exported_build_request(&adapter, &request);
        if declares::<A>(capability) {
            let body = body_json(&built.expect("a request with an image builds"));
            assert!(mentions(&body, needle), "{capability}: not in {body}");
            assert!(mentions(&body, "what is this?"), "{capability}: text lost");
        } else {
            assert!(invalid_request(built).contains(capability));
        }
    }
}

/// A JSON schema reaches the body as a JSON object (the upstream's native form), not as text.
pub fn json_schema_reaches_the_body_as_an_object<A: Adapter>(fixtures: &Fixtures) {
    if !declares::<A>("json-schema") {
        return;
    }
    let adapter = adapter::<A>(fixtures);
    let schema = json!({
        "type": "object",
        "properties": {"zq_answer": {"type": "string"}},
        "required": ["zq_answer"],
        "additionalProperties": false,
    });
    let mut request = request();
    request.response_format = ResponseFormat::JsonSchema(JsonSchema {
        name: "zq_response".into(),
        schema: schema.to_string(),
        strict: true,
    });
    let body = body_json(&exported_build_request(&adapter, &request).expect("builds"));
    assert!(
        all_values(&body).contains(&&schema),
        "the schema is not in the body as an object: {body}"
    );
}

/// A content part of a kind the adapter does not know is refused, naming the kind.
pub fn unknown_content_parts_are_refused_by_kind<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    let mut request = request();
    request.messages[0].content.push(ContentPart::Other((
        "zq_hologram".into(),
        r#"{"type":"zq_hologram","zq_hologram":{}}"#.into(),
    )));
    let message = invalid_request(exported_build_request(&adapter, &request));
    assert!(message.contains("zq_hologram"), "{message}");
}

/// A request needing a capability the adapter does not declare is refused naming it; one
/// it declares builds, and what it asked for shows in the body: never silently dropped.
pub fn capabilities_are_honest<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    // Room for a thinking budget (Anthropic's must stay below max_tokens).
    let request = || ChatRequest {
        max_tokens: Some(16_000),
        ..request()
    };
    let plain = body_json(&exported_build_request(&adapter, &request()).expect("builds"));
    let number = |body: &Value, expected: f64| {
        all_values(body)
            .iter()
            .any(|value| value.as_f64() == Some(expected))
    };
    type Case = (&'static str, fn(&mut ChatRequest), fn(&Value) -> bool);
    let cases: [Case; 10] = [
        (
            "tools",
            |r| {
                r.tools = Some(
                    r#"[{"type":"function","function":{"name":"zq_lookup","parameters":{"type":"object"}}}]"#
                        .into(),
                )
            },
            |body| mentions(body, "zq_lookup"),
        ),
        ("seed", |r| r.seed = Some(4242), |_| true),
        ("top-k", |r| r.top_k = Some(37), |_| true),
        (
            "presence-penalty",
            |r| r.presence_penalty = Some(0.375),
            |_| true,
        ),
        (
            "frequency-penalty",
            |r| r.frequency_penalty = Some(0.625),
            |_| true,
        ),
        (
            "repeat-penalty",
            |r| r.repeat_penalty = Some(1.125),
            |_| true,
        ),
        (
            "passthrough",
            |r| r.extra = Some(r#"{"zq_extra":"on"}"#.into()),
            |body| body["zq_extra"] == "on",
        ),
        (
            "json-object",
            |r| r.response_format = ResponseFormat::JsonObject,
            |_| true,
        ),
        (
            "reasoning",
            |r| {
                r.think = Some(true);
                r.reasoning_effort = Some("high".into());
            },
            |_| true,
        ),
        (
            "images",
            |r| {
                r.messages[0]
                    .content
                    .push(image_part(inline_image("image/png", "iVBORw0KGgoZQ")))
            },
            |body| mentions(body, "iVBORw0KGgoZQ"),
        ),
    ];
    let values = [
        ("seed", 4242.0),
        ("top-k", 37.0),
        ("presence-penalty", 0.375),
        ("frequency-penalty", 0.625),
        ("repeat-penalty", 1.125),
    ];
    for (capability, set, shows) in cases {
        let mut request = request();
        set(&mut request);
        let built = exported_build_request(&adapter, &request);
        if !declares::<A>(capability) {
            let message = invalid_request(built);
            assert!(message.contains(capability), "{capability}: {message}");
            continue;
        }
        let body = body_json(&built.unwrap_or_else(|e| panic!("{capability}: {e:?}")));
        assert_ne!(body, plain, "{capability}: the body did not change");
        assert!(shows(&body), "{capability}: not in {body}");
        if let Some((_, value)) = values.iter().find(|(name, _)| *name == capability) {
            assert!(number(&body, *value), "{capability}: {value} not in {body}");
        }
    }
    // Tool turns need "tools" too.
    if !declares::<A>("tools") {
        let mut request = request();
        request.messages.push(message("tool", "42"));
        assert!(invalid_request(exported_build_request(&adapter, &request)).contains("tools"));
    }
}

/// With "embeddings": the request carries every input in order, and the fixture answer gives
/// one vector per input, in input order, with its token count. Without: refused.
pub fn embeddings_round_trip<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    let request = embeddings_request("conformance-embedder", &["a", "b"]);
    let Some(answer) = fixtures.embeddings_answer else {
        invalid_request(adapter.build_embeddings_request(&request));
        return;
    };
    let built = adapter
        .build_embeddings_request(&request)
        .expect("an embeddings request builds");
    assert_eq!(built.method, "POST");
    let body = body_json(&built);
    assert!(
        all_values(&body).contains(&&json!(["a", "b"])),
        "the inputs are not in the body in order: {body}"
    );
    let parsed = adapter
        .parse_embeddings_response(&response(200, answer))
        .expect("the fixture embeddings answer parses");
    assert_eq!(parsed.embeddings, vec![vec![0.5, -1.0], vec![0.25, 2.0]]);
    assert_eq!(parsed.input_tokens, Some(7));
    malformed_response(adapter.parse_embeddings_response(&response(200, "<html>")));
}

/// A models listing, when the adapter has one, is a `GET` without a body.
pub fn models_listing_is_a_get<A: Adapter>(fixtures: &Fixtures) {
    let adapter = adapter::<A>(fixtures);
    if let Some(built) = adapter.build_models_request(None) {
        assert_eq!(built.method, "GET");
        assert!(built.body.is_empty());
        assert!(built.path.starts_with('/'));
    }
}
