//! `match.exprs[]` conditions, compiled at table load (docs/behaviour.md §3.2).

use regex::bytes::{Regex, RegexBuilder};

use crate::model::{Expr, ExprOp, ExprScope};
use crate::request::{RequestView, Variable};

#[derive(Debug)]
pub struct CompiledExpr {
    subject: Subject,
    test: Test,
}

/// What an expression tests, resolved at table load.
#[derive(Debug)]
enum Subject {
    Header(String),
    Query(String),
    Cookie(String),
    Path,
    Variable(Variable),
}

#[derive(Debug)]
enum Test {
    Equal(Vec<u8>),
    NotEqual(Vec<u8>),
    Numeric(ExprOp, f64),
    In(Vec<Vec<u8>>),
    NotIn(Vec<Vec<u8>>),
    Regex(Regex),
    NotRegex(Regex),
}

impl CompiledExpr {
    pub fn compile(expr: &Expr) -> Result<Self, String> {
        if expr.scope != ExprScope::Path && expr.name.is_empty() {
            return Err("subject.name: required for this scope".into());
        }
        let subject = match expr.scope {
            ExprScope::Header => Subject::Header(expr.name.clone()),
            ExprScope::Query => Subject::Query(expr.name.clone()),
            ExprScope::Cookie => Subject::Cookie(expr.name.clone()),
            ExprScope::Path => Subject::Path,
            ExprScope::Variable => Subject::Variable(Variable::parse(&expr.name).ok_or_else(|| {
                format!(
                    "subject.name: variable {:?} is not supported by Portcullis (supported: {})",
                    expr.name,
                    Variable::NAMES
                )
            })?),
        };
        let value = || -> Result<&str, String> {
            if expr.set.is_some() {
                return Err("set: must be unset for this operator".into());
            }
            match expr.value.as_deref() {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err("value: empty value".into()),
            }
        };
        let set = || -> Result<Vec<Vec<u8>>, String> {
            if expr.value.is_some() {
                return Err("value: must be unset for this operator".into());
            }
            match &expr.set {
                Some(s) if !s.is_empty() => Ok(s.iter().map(|v| v.as_bytes().to_vec()).collect()),
                _ => Err("set: empty set value".into()),
            }
        };
        let regex = |case_insensitive: bool| -> Result<Regex, String> {
            RegexBuilder::new(value()?)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|e| format!("value: invalid regex: {e}"))
        };
        let test = match expr.op {
            ExprOp::Equal => Test::Equal(value()?.as_bytes().to_vec()),
            ExprOp::NotEqual => Test::NotEqual(value()?.as_bytes().to_vec()),
            op @ (ExprOp::GreaterThan
            | ExprOp::GreaterThanEqual
            | ExprOp::LessThan
            | ExprOp::LessThanEqual) => {
                let v = value()?;
                let n = parse_number(v.as_bytes())
                    .ok_or_else(|| format!("value: {v:?} is not a number"))?;
                Test::Numeric(op, n)
            }
            ExprOp::In => Test::In(set()?),
            ExprOp::NotIn => Test::NotIn(set()?),
            ExprOp::RegexMatch => Test::Regex(regex(false)?),
            ExprOp::RegexMatchCaseInsensitive => Test::Regex(regex(true)?),
            ExprOp::RegexNotMatch => Test::NotRegex(regex(false)?),
            ExprOp::RegexNotMatchCaseInsensitive => Test::NotRegex(regex(true)?),
        };
        Ok(CompiledExpr { subject, test })
    }

    pub fn holds(&self, req: &RequestView<'_>) -> bool {
        let query_value;
        let subject: Option<&[u8]> = match &self.subject {
            Subject::Header(name) => req.header(name),
            Subject::Cookie(name) => req.cookie(name),
            Subject::Path => Some(&req.path),
            Subject::Query(name) => {
                query_value = req.query_arg(name).and_then(|q| q.value);
                query_value.as_deref().map(str::as_bytes)
            }
            Subject::Variable(variable) => req.variable(*variable),
        };
        match (&self.test, subject) {
            (Test::Equal(v), Some(s)) => s == v.as_slice(),
            (Test::Equal(_), None) => false,
            (Test::NotEqual(v), s) => s != Some(v.as_slice()),
            (Test::Numeric(op, v), Some(s)) => parse_number(s).is_some_and(|n| match op {
                ExprOp::GreaterThan => n > *v,
                ExprOp::GreaterThanEqual => n >= *v,
                ExprOp::LessThan => n < *v,
                ExprOp::LessThanEqual => n <= *v,
                _ => false,
            }),
            (Test::Numeric(..), None) => false,
            (Test::In(set), Some(s)) => set.iter().any(|v| v.as_slice() == s),
            (Test::In(_), None) => false,
            (Test::NotIn(set), s) => s.is_none_or(|s| set.iter().all(|v| v.as_slice() != s)),
            (Test::Regex(re), Some(s)) => re.is_match(s),
            (Test::Regex(_), None) => false,
            (Test::NotRegex(re), s) => s.is_none_or(|s| !re.is_match(s)),
        }
    }
}

/// A decimal number: optional sign, digits, optional fraction. No exponents, no `inf`/`nan`.
fn parse_number(raw: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if valid { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestRequest;

    fn expr(
        scope: ExprScope,
        name: &str,
        op: ExprOp,
        value: Option<&str>,
        set: Option<&[&str]>,
    ) -> Expr {
        Expr {
            scope,
            name: name.into(),
            op,
            value: value.map(Into::into),
            set: set.map(|s| s.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn eval(e: &Expr, uri: &str, headers: &[(&str, &str)]) -> bool {
        let request = TestRequest::get(uri).headers(headers);
        let view = request.view();
        CompiledExpr::compile(e).unwrap().holds(&view)
    }

    use ExprOp::*;
    use ExprScope::*;

    #[test]
    fn operators_follow_the_compatibility_table() {
        // (expr, uri, headers, expected)
        type Case<'a> = (Expr, &'a str, Vec<(&'a str, &'a str)>, bool);
        let cases: Vec<Case<'_>> = vec![
            (
                expr(Header, "X-Env", Equal, Some("prod"), None),
                "/",
                vec![("x-env", "prod")],
                true,
            ),
            (
                expr(Header, "x-env", Equal, Some("prod"), None),
                "/",
                vec![("X-Env", "Prod")],
                false,
            ),
            (
                expr(Header, "x-env", Equal, Some("prod"), None),
                "/",
                vec![],
                false,
            ),
            (
                expr(Header, "x-env", Equal, Some("a"), None),
                "/",
                vec![("x-env", "a"), ("x-env", "b")],
                true,
            ),
            (
                expr(Header, "x-env", Equal, Some("b"), None),
                "/",
                vec![("x-env", "a"), ("x-env", "b")],
                false,
            ),
            (
                expr(Header, "x-env", NotEqual, Some("prod"), None),
                "/",
                vec![],
                true,
            ),
            (
                expr(Header, "x-env", NotEqual, Some("prod"), None),
                "/",
                vec![("x-env", "dev")],
                true,
            ),
            (
                expr(Header, "x-env", NotEqual, Some("prod"), None),
                "/",
                vec![("x-env", "prod")],
                false,
            ),
            (
                expr(Query, "v", GreaterThan, Some("2"), None),
                "/?v=3",
                vec![],
                true,
            ),
            (
                expr(Query, "v", GreaterThan, Some("2"), None),
                "/?v=2",
                vec![],
                false,
            ),
            (
                expr(Query, "v", GreaterThanEqual, Some("2"), None),
                "/?v=2.0",
                vec![],
                true,
            ),
            (
                expr(Query, "v", LessThan, Some("2"), None),
                "/?v=-1.5",
                vec![],
                true,
            ),
            (
                expr(Query, "v", LessThanEqual, Some("2"), None),
                "/?v=abc",
                vec![],
                false,
            ),
            (
                expr(Query, "v", LessThan, Some("2"), None),
                "/",
                vec![],
                false,
            ),
            (
                expr(Query, "v", LessThan, Some("2"), None),
                "/?v=1e1",
                vec![],
                false,
            ),
            (
                expr(Query, "q", Equal, Some("a b"), None),
                "/?q=a+b",
                vec![],
                true,
            ),
            (
                expr(Query, "q", Equal, Some("a b"), None),
                "/?q=a%20b",
                vec![],
                true,
            ),
            (
                expr(Query, "Q", Equal, Some("x"), None),
                "/?q=x",
                vec![],
                false,
            ),
            (
                expr(Query, "q", Equal, Some("1"), None),
                "/?q=1&q=2",
                vec![],
                true,
            ),
            (
                expr(Cookie, "sid", In, None, Some(&["a", "b"])),
                "/",
                vec![("cookie", "x=1; sid=b")],
                true,
            ),
            (
                expr(Cookie, "sid", In, None, Some(&["a", "b"])),
                "/",
                vec![("cookie", "sid=c")],
                false,
            ),
            (
                expr(Cookie, "sid", In, None, Some(&["a"])),
                "/",
                vec![],
                false,
            ),
            (
                expr(Cookie, "sid", NotIn, None, Some(&["a"])),
                "/",
                vec![],
                true,
            ),
            (
                expr(Cookie, "sid", NotIn, None, Some(&["a"])),
                "/",
                vec![("cookie", "sid=a")],
                false,
            ),
            (
                expr(Cookie, "sid", NotIn, None, Some(&["a"])),
                "/",
                vec![("cookie", "sid=z")],
                true,
            ),
            (
                expr(Path, "", RegexMatch, Some("^/api/v[0-9]+"), None),
                "/api/v2/x",
                vec![],
                true,
            ),
            (
                expr(Path, "", RegexMatch, Some("v[0-9]+"), None),
                "/api/v2/x",
                vec![],
                true,
            ),
            (
                expr(Path, "", RegexMatch, Some("^/API"), None),
                "/api/v2",
                vec![],
                false,
            ),
            (
                expr(Path, "", RegexMatchCaseInsensitive, Some("^/API"), None),
                "/api/v2",
                vec![],
                true,
            ),
            (
                expr(Path, "", RegexMatch, Some("^/a/c$"), None),
                "/a/b/../c",
                vec![],
                true,
            ),
            (
                expr(Header, "ua", RegexNotMatch, Some("bot"), None),
                "/",
                vec![],
                true,
            ),
            (
                expr(Header, "ua", RegexNotMatch, Some("bot"), None),
                "/",
                vec![("ua", "a bot")],
                false,
            ),
            (
                expr(Header, "ua", RegexNotMatch, Some("bot"), None),
                "/",
                vec![("ua", "BOT")],
                true,
            ),
            (
                expr(
                    Header,
                    "ua",
                    RegexNotMatchCaseInsensitive,
                    Some("bot"),
                    None,
                ),
                "/",
                vec![("ua", "BOT")],
                false,
            ),
        ];
        for (i, (e, uri, headers, want)) in cases.iter().enumerate() {
            assert_eq!(
                eval(e, uri, headers),
                *want,
                "case {i}: {e:?} on {uri} {headers:?}"
            );
        }
    }

    #[test]
    fn invalid_expressions_are_rejected_with_the_reason() {
        let cases = [
            (
                expr(Header, "a", Equal, Some(""), None),
                "value: empty value",
            ),
            (expr(Header, "a", Equal, None, None), "value: empty value"),
            (
                expr(Header, "a", In, None, Some(&[])),
                "set: empty set value",
            ),
            (expr(Header, "a", In, None, None), "set: empty set value"),
            (
                expr(Header, "a", In, Some("x"), Some(&["x"])),
                "value: must be unset for this operator",
            ),
            (
                expr(Header, "a", Equal, Some("x"), Some(&["x"])),
                "set: must be unset for this operator",
            ),
            (
                expr(Header, "a", GreaterThan, Some("ten"), None),
                "value: \"ten\" is not a number",
            ),
            (
                expr(Header, "a", RegexMatch, Some("(a"), None),
                "value: invalid regex:",
            ),
            (
                expr(Header, "a", RegexMatch, Some("(?=a)"), None),
                "value: invalid regex:",
            ),
            (
                expr(Header, "", Equal, Some("x"), None),
                "subject.name: required",
            ),
            (
                expr(Variable, "remote_addr", Equal, Some("x"), None),
                "subject.name: variable \"remote_addr\" is not supported by Portcullis (supported: ssl_client_s_dn, ssl_client_verify, ssl_server_name)",
            ),
            (
                expr(Variable, "", Equal, Some("x"), None),
                "subject.name: required",
            ),
        ];
        for (e, want) in cases {
            let err = CompiledExpr::compile(&e).unwrap_err();
            assert!(
                err.starts_with(want),
                "{e:?}: got {err:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn tls_variables_read_what_the_handshake_established() {
        use crate::request::TlsFacts;
        let dn = "CN=jack,O=Acme\\, Inc.";
        let verified = TlsFacts {
            sni: Some("chat.example.com"),
            client_verified: true,
            client_subject: Some(dn),
        };
        let anonymous = TlsFacts {
            sni: None,
            client_verified: false,
            client_subject: None,
        };
        // (expr, connection, expected)
        let cases: Vec<(Expr, Option<TlsFacts<'_>>, bool)> = vec![
            (
                expr(Variable, "ssl_client_s_dn", Equal, Some(dn), None),
                Some(verified),
                true,
            ),
            (
                expr(Variable, "ssl_client_s_dn", Equal, Some("CN=jack"), None),
                Some(verified),
                false,
            ),
            (
                expr(
                    Variable,
                    "ssl_client_s_dn",
                    RegexMatch,
                    Some("^CN=jack,"),
                    None,
                ),
                Some(verified),
                true,
            ),
            (
                expr(Variable, "ssl_client_s_dn", RegexMatch, Some("."), None),
                Some(anonymous),
                false,
            ),
            (
                expr(Variable, "ssl_client_s_dn", NotEqual, Some(dn), None),
                Some(anonymous),
                true,
            ),
            (
                expr(Variable, "ssl_client_s_dn", RegexMatch, Some("."), None),
                None,
                false,
            ),
            (
                expr(Variable, "ssl_client_verify", Equal, Some("SUCCESS"), None),
                Some(verified),
                true,
            ),
            (
                expr(Variable, "ssl_client_verify", Equal, Some("SUCCESS"), None),
                Some(anonymous),
                false,
            ),
            (
                expr(Variable, "ssl_client_verify", Equal, Some("NONE"), None),
                Some(anonymous),
                true,
            ),
            // Plain HTTP has no TLS variables at all.
            (
                expr(Variable, "ssl_client_verify", Equal, Some("NONE"), None),
                None,
                false,
            ),
            (
                expr(
                    Variable,
                    "ssl_server_name",
                    Equal,
                    Some("chat.example.com"),
                    None,
                ),
                Some(verified),
                true,
            ),
            (
                expr(
                    Variable,
                    "ssl_server_name",
                    In,
                    None,
                    Some(&["chat.example.com"]),
                ),
                Some(anonymous),
                false,
            ),
        ];
        let request = TestRequest::get("/");
        for (e, tls, want) in cases {
            let view = RequestView {
                tls,
                ..request.view()
            };
            assert_eq!(
                CompiledExpr::compile(&e).unwrap().holds(&view),
                want,
                "{e:?} on {tls:?}"
            );
        }
    }
}
