//! The sync protocol's messages (`portcullis_contract::protocol`) and route tables: a pushed
//! table message is decoded, compiled as a dataplane compiles it (the table file's YAML form
//! too) and asked for a few requests drawn from its own rules; a dataplane's reply is decoded.
//!
//! A delta is applied to a base of the generation and hash it names (the routes of the seed
//! table), and its result compiled.
//!
//! Properties: a decoded message re-encodes to one that decodes to the same message (what the
//! controller sends is what the dataplane reads); applying a delta, whatever its positions,
//! and decisions on a compiled table do not panic.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use portcullis_contract::decision::{decide, decide_handshake};
use portcullis_contract::fixtures::TestRequest;
use portcullis_contract::protocol::{self, ToController, ToDataplane};
use portcullis_contract::table::{CompiledTable, Registries, Route, RouteTable};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode::<ToDataplane>(text) {
        Ok(ToDataplane::Table { table, v }) => {
            let again = protocol::encode_table(&table, 0);
            let table = ToDataplane::Table { table, v };
            assert_eq!(
                protocol::decode::<ToDataplane>(&again).as_ref(),
                Ok(&table),
                "a table message does not survive encoding"
            );
            let ToDataplane::Table { table, .. } = table else {
                unreachable!()
            };
            compile_and_ask(table);
        }
        Ok(message @ ToDataplane::Delta { .. }) => {
            let again = protocol::encode(&message);
            assert_eq!(
                protocol::decode::<ToDataplane>(&again).as_ref(),
                Ok(&message),
                "a delta message does not survive encoding"
            );
            let ToDataplane::Delta { delta, .. } = message else {
                unreachable!()
            };
            let base = RouteTable {
                generation: delta.base.generation,
                hash: delta.base.hash.clone(),
                routes: (0..3)
                    .map(|i| {
                        Route {
                            id: format!("demo/base/{i}"),
                            paths: vec![format!("/base{i}")],
                            ..Route::default()
                        }
                        .into()
                    })
                    .collect(),
                ..RouteTable::default()
            };
            let sizes: Vec<(usize, usize)> = delta
                .routes
                .iter()
                .map(|s| {
                    (
                        usize::try_from(s.remove).unwrap_or(usize::MAX),
                        s.insert.len(),
                    )
                })
                .collect();
            if let Ok(mut table) = delta.apply(&base) {
                // What the splices said, exactly: the base less what they removed, plus
                // what they inserted.
                let removed: usize = sizes.iter().map(|s| s.0).sum();
                let inserted: usize = sizes.iter().map(|s| s.1).sum();
                assert_eq!(table.routes.len() + removed, base.routes.len() + inserted);
                // Past the hash check (the fuzzer cannot forge one), to the compiler.
                table.hash.clear();
                compile_and_ask(table);
            }
        }
        Err(_) => {}
    }
    if let Ok(table) = serde_yaml::from_str::<RouteTable>(text) {
        compile_and_ask(table);
    }
    if let Ok(reply) = protocol::decode::<ToController>(text) {
        let again = protocol::encode(&reply);
        assert_eq!(
            protocol::decode::<ToController>(&again).as_ref(),
            Ok(&reply),
            "a reply does not survive encoding"
        );
    }
}

fn compile_and_ask(table: RouteTable) {
    let targets: Vec<(String, String)> = table
        .routes
        .iter()
        .take(4)
        .map(|r| {
            let host = r.hosts.first().map_or("example.com", |h| h.as_str());
            let path = r.paths.first().map_or("/", |p| p.as_str());
            (host.replace('*', "a"), path.replace('*', "x/y"))
        })
        .chain([("example.com".to_string(), "/".to_string())])
        .collect();
    let Ok(compiled) = CompiledTable::compile_with(table, &Registries::default()) else {
        return;
    };
    for (host, path) in targets {
        for websocket in [false, true] {
            let Some(request) = request(&host, &path, websocket) else {
                continue;
            };
            let _ = decide(&compiled, request.head(), 1_800_000_000);
            if websocket {
                let _ = decide_handshake(&compiled, request.head(), 1_800_000_000);
            }
        }
    }
}

fn request(host: &str, path: &str, websocket: bool) -> Option<TestRequest> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_str(host).ok()?);
    if websocket {
        for (name, value) in [
            (http::header::CONNECTION, "Upgrade"),
            (http::header::UPGRADE, "websocket"),
            (http::header::SEC_WEBSOCKET_VERSION, "13"),
            (http::header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Some(TestRequest {
        method: Method::GET,
        version: Version::HTTP_11,
        uri: path.parse::<Uri>().ok()?,
        headers,
        peer: IpAddr::from([127, 0, 0, 1]),
    })
}
