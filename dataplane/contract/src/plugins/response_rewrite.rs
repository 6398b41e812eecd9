//! `response-rewrite` (APISIX priority 899, header and body filters): the upstream's answer —
//! a plain HTTP response or a refused WebSocket handshake, never a 101 — gets a new status,
//! headers and body when its `vars` conditions hold. A replaced body drops the upstream's
//! `Content-Length`, `Transfer-Encoding`, `Content-Encoding`, `ETag` and `Last-Modified`; the
//! transport frames the new one, so a kept-alive connection stays in step.

use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use regex::Regex;

use crate::model::ResponseRewriteConfig;

#[derive(Debug)]
pub struct ResponseRewrite {
    status: Option<StatusCode>,
    body: Option<Arc<[u8]>>,
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
    vars: Option<Cond>,
}

impl ResponseRewrite {
    pub fn compile(c: &ResponseRewriteConfig) -> Result<ResponseRewrite, String> {
        if c.filters.is_some() {
            return Err(
                "filters: not supported by Portcullis (use body to replace the whole body)".into(),
            );
        }
        let status = c
            .status_code
            .map(|code| {
                (200..=598)
                    .contains(&code)
                    .then(|| StatusCode::from_u16(code).ok())
                    .flatten()
                    .ok_or_else(|| format!("status_code: {code} is not within 200 to 598"))
            })
            .transpose()?;
        let body = match (&c.body, c.body_base64) {
            (None, false) => None,
            (None, true) => return Err("body_base64: set body to the base64 text".into()),
            (Some(b), false) => Some(Arc::from(b.as_bytes())),
            (Some(b), true) => Some(Arc::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .ok()
                    .filter(|d| !d.is_empty())
                    .ok_or("body: not valid base64 (body_base64 is true)")?,
            )),
        };
        let name = |field: &str, name: &str| {
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("headers.{field}: {name:?} is not a header name"))?;
            if super::FRAMING.contains(&n.as_str()) {
                return Err(format!(
                    "headers.{field}: {name:?} frames the connection; the gateway sets it"
                ));
            }
            Ok(n)
        };
        let pair = |field: &str, (n, v): &(String, String)| {
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| format!("headers.{field}: {n}: not a header value"))?;
            Ok::<_, String>((name(field, n)?, value))
        };
        let h = &c.headers;
        Ok(ResponseRewrite {
            status,
            body,
            add: h
                .add
                .iter()
                .map(|p| pair("add", p))
                .collect::<Result<_, _>>()?,
            set: h
                .set
                .iter()
                .map(|p| pair("set", p))
                .collect::<Result<_, _>>()?,
            remove: h
                .remove
                .iter()
                .map(|n| name("remove", n))
                .collect::<Result<_, _>>()?,
            vars: c
                .vars
                .as_ref()
                .map(|v| Cond::compile(v, "vars"))
                .transpose()?,
        })
    }

    /// Rewrites an upstream answer's head when `vars` hold. The new body, when it is replaced
    /// (its framing headers are gone: the caller frames it).
    pub fn apply(&self, status: &mut StatusCode, headers: &mut HeaderMap) -> Option<Arc<[u8]>> {
        if let Some(vars) = &self.vars
            && !vars.eval(*status, headers)
        {
            return None;
        }
        if let Some(s) = self.status {
            *status = s;
        }
        if self.body.is_some() {
            for name in [
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONTENT_ENCODING,
                header::ETAG,
                header::LAST_MODIFIED,
            ] {
                headers.remove(name);
            }
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
        self.body.clone()
    }
}

/// A lua-resty-expr expression over the response.
#[derive(Debug)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Test { var: Var, op: Op },
}

#[derive(Debug)]
enum Var {
    Status,
    /// `upstream_http_<name>` / `sent_http_<name>`: a response header.
    Header(HeaderName),
}

#[derive(Debug)]
enum Operand {
    Number(f64),
    Text(String),
}

#[derive(Debug)]
enum Op {
    Eq(Operand),
    Ne(Operand),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    Regex(Regex),
    In(Vec<Operand>),
}

const OPERATORS: &str = "==, ~=, >, >=, <, <=, ~~, ~*, in, and ! before one of them";
const VARIABLES: &str = "status, upstream_http_<name>, sent_http_<name>";

impl Cond {
    /// A rule list: `[rule, rule…]` (all must hold) or `["OR"|"AND"|"!OR"|"!AND", rule…]`;
    /// a rule is `[var, op, value]`, `[var, "!", op, value]` or a nested list.
    fn compile(value: &serde_json::Value, at: &str) -> Result<Cond, String> {
        let list = value
            .as_array()
            .ok_or_else(|| format!("{at}: an array of conditions"))?;
        let (logic, rest) = match list.first().and_then(|v| v.as_str()) {
            Some(l @ ("AND" | "OR" | "!AND" | "!OR")) => (l, &list[1..]),
            Some(_) => return Self::leaf(list, at),
            None => ("AND", &list[..]),
        };
        if rest.is_empty() {
            return Err(format!("{at}: at least one condition"));
        }
        let offset = list.len() - rest.len();
        let subs = rest
            .iter()
            .enumerate()
            .map(|(i, r)| Cond::compile(r, &format!("{at}[{}]", i + offset)))
            .collect::<Result<Vec<_>, _>>()?;
        let cond = if logic.ends_with("OR") {
            Cond::Any(subs)
        } else {
            Cond::All(subs)
        };
        Ok(if logic.starts_with('!') {
            Cond::Not(Box::new(cond))
        } else {
            cond
        })
    }

    fn leaf(list: &[serde_json::Value], at: &str) -> Result<Cond, String> {
        let (negate, rest) = match list.get(1).and_then(|v| v.as_str()) {
            Some("!") => (true, &list[2..]),
            _ => (false, &list[1..]),
        };
        let [op, operand] = rest else {
            return Err(format!("{at}: a condition is [variable, operator, value]"));
        };
        let name = list[0].as_str().unwrap_or_default();
        let var = if name == "status" {
            Var::Status
        } else if let Some(h) = name
            .strip_prefix("upstream_http_")
            .or_else(|| name.strip_prefix("sent_http_"))
            .filter(|h| !h.is_empty())
        {
            Var::Header(
                HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                    .map_err(|_| format!("{at}[0]: {name:?} names no valid header"))?,
            )
        } else {
            return Err(format!(
                "{at}[0]: variable {name:?} is not supported (supported: {VARIABLES})"
            ));
        };
        let op_at = format!("{at}[{}]", list.len() - 2);
        let value_at = format!("{at}[{}]", list.len() - 1);
        let operand_of = |v: &serde_json::Value| match v {
            serde_json::Value::Number(n) => n.as_f64().map(Operand::Number),
            serde_json::Value::String(s) => Some(Operand::Text(s.clone())),
            _ => None,
        };
        let one = || operand_of(operand).ok_or_else(|| format!("{value_at}: a string or a number"));
        let number = || {
            operand
                .as_f64()
                .ok_or_else(|| format!("{value_at}: a number to compare with"))
        };
        let regex = |insensitive: bool| {
            let pattern = operand
                .as_str()
                .ok_or_else(|| format!("{value_at}: a regular expression"))?;
            regex::RegexBuilder::new(pattern)
                .case_insensitive(insensitive)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{value_at}: {pattern:?} is not a valid regex: {e}"))
        };
        let op = match op.as_str().unwrap_or_default() {
            "==" => Op::Eq(one()?),
            "~=" => Op::Ne(one()?),
            ">" => Op::Gt(number()?),
            ">=" => Op::Ge(number()?),
            "<" => Op::Lt(number()?),
            "<=" => Op::Le(number()?),
            "~~" => Op::Regex(regex(false)?),
            "~*" => Op::Regex(regex(true)?),
            "in" => Op::In(
                operand
                    .as_array()
                    .and_then(|a| a.iter().map(operand_of).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| format!("{value_at}: an array of strings or numbers"))?,
            ),
            other => {
                return Err(format!(
                    "{op_at}: operator {other:?} is not supported (supported: {OPERATORS})"
                ));
            }
        };
        let test = Cond::Test { var, op };
        Ok(if negate {
            Cond::Not(Box::new(test))
        } else {
            test
        })
    }

    fn eval(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match self {
            Cond::All(subs) => subs.iter().all(|c| c.eval(status, headers)),
            Cond::Any(subs) => subs.iter().any(|c| c.eval(status, headers)),
            Cond::Not(c) => !c.eval(status, headers),
            Cond::Test { var, op } => {
                let text = match var {
                    Var::Status => Some(status.as_str()),
                    Var::Header(h) => headers.get(h).and_then(|v| v.to_str().ok()),
                };
                op.holds(text)
            }
        }
    }
}

impl Operand {
    /// A number compares numerically (a value that is none is unequal); text compares as is.
    fn equals(&self, value: &str) -> bool {
        match self {
            Operand::Number(n) => value.trim().parse::<f64>().is_ok_and(|v| v == *n),
            Operand::Text(t) => t == value,
        }
    }
}

impl Op {
    /// A missing variable holds only for `~=`.
    fn holds(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return matches!(self, Op::Ne(_));
        };
        let number = || value.trim().parse::<f64>().ok();
        match self {
            Op::Eq(o) => o.equals(value),
            Op::Ne(o) => !o.equals(value),
            Op::Gt(n) => number().is_some_and(|v| v > *n),
            Op::Ge(n) => number().is_some_and(|v| v >= *n),
            Op::Lt(n) => number().is_some_and(|v| v < *n),
            Op::Le(n) => number().is_some_and(|v| v <= *n),
            Op::Regex(r) => r.is_match(value),
            Op::In(list) => list.iter().any(|o| o.equals(value)),
        }
    }
}
