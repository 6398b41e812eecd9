//! Plugins from outside the rule, end to end from manifests: an `ApisixPluginConfig` shared by
//! rules, an `ApisixGlobalRule` of one IngressClass, and an `ApisixConsumer`'s own plugins.

use std::time::Duration;

use portcullis_tests::*;

const KEY: &str = "this_is_the_key";

/// The guide's manifests with the route file replaced by `route`, and `extra` files added.
fn manifests(echo: &Echo, route: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = example_manifests(echo.addr);
    write_atomically(dir.path(), "route.yaml", route);
    for (file, text) in extra {
        write_atomically(dir.path(), file, text);
    }
    dir
}

/// A handshake on `path` of `ws.example.com` with jack's key.
fn handshake_with(gw: &Gateway, path: &str, key: &str) -> RawResponse {
    raw_request(
        gw.http,
        &handshake("ws.example.com", path, &[("apikey", key)]),
    )
}

fn plugin_config(count: u64) -> String {
    format!(
        "apiVersion: apisix.apache.org/v2\nkind: ApisixPluginConfig\nmetadata: {{name: limits, namespace: demo}}\nspec:\n  plugins:\n  - name: limit-count\n    enable: true\n    config: {{count: {count}, time_window: 60, key: consumer_name, policy: local, rejected_code: 429}}\n"
    )
}

#[test]
fn a_plugin_config_shared_by_two_rules_is_updated_once_for_both() {
    let echo = Echo::start(&[]);
    let rule = |name: &str, path: &str| {
        format!(
            "  - name: {name}\n    match: {{hosts: [ws.example.com], paths: [{path}]}}\n    websocket: true\n    backends: [{{serviceName: echo, servicePort: ws}}]\n    authentication: {{enable: true, type: keyAuth}}\n    plugin_config_name: limits\n"
        )
    };
    let route = format!(
        "apiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: echo, namespace: demo}}\nspec:\n  http:\n{}{}",
        rule("one", "/raw"),
        rule("two", "/other")
    );
    let dir = manifests(&echo, &route, &[("config.yaml", &plugin_config(100))]);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    gw.wait_key(KEY, 101);
    for path in ["/raw", "/other"] {
        let r = handshake_with(&gw, path, KEY);
        assert_eq!(r.status(), 101, "{}", r.raw);
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"), "{path}");
    }
    // One change to the config: both rules have it at once (one table).
    write_atomically(dir.path(), "config.yaml", &plugin_config(3));
    wait_for("the new limit", Duration::from_secs(10), || {
        (handshake_with(&gw, "/raw", KEY).header("x-ratelimit-limit") == Some("3")).then_some(())
    });
    let other = handshake_with(&gw, "/other", KEY);
    assert_eq!(
        other.header("x-ratelimit-limit"),
        Some("3"),
        "{}",
        other.raw
    );
    // Each rule counts on its own: /other has had one handshake under the new limit.
    assert_eq!(other.header("x-ratelimit-remaining"), Some("2"));
    let status = gw.status();
    let config = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "ApisixPluginConfig")
        .unwrap_or_else(|| panic!("no ApisixPluginConfig in /status: {status}"));
    assert_eq!(config["conditions"][0]["status"], "True", "{config}");

    // A config that goes away takes its rules with it (503), rather than serving them unlimited.
    std::fs::remove_file(dir.path().join("config.yaml")).unwrap();
    wait_for("rules to fail closed", Duration::from_secs(10), || {
        (handshake_with(&gw, "/raw", KEY).status() == 503).then_some(())
    });
    assert_eq!(handshake_with(&gw, "/other", KEY).status(), 503);
}

#[test]
fn a_global_rule_applies_to_the_rules_of_its_class_and_not_another() {
    let echo = Echo::start(&[]);
    let class = |name: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {name}}}\nspec: {{controller: portcullis.dev/ingress-controller}}\n"
        )
    };
    let route = |class: &str| {
        format!(
            "---\napiVersion: apisix.apache.org/v2\nkind: ApisixRoute\nmetadata: {{name: {class}, namespace: demo}}\nspec:\n  ingressClassName: {class}\n  http:\n  - name: ws\n    match: {{hosts: [ws.example.com], paths: [/raw]}}\n    websocket: true\n    backends: [{{serviceName: echo, servicePort: ws}}]\n"
        )
    };
    let global = "apiVersion: apisix.apache.org/v2\nkind: ApisixGlobalRule\nmetadata: {name: deny-loopback, namespace: ops}\nspec:\n  ingressClassName: blue\n  plugins:\n  - name: ip-restriction\n    enable: true\n    config: {blacklist: [127.0.0.0/8], message: global rule}\n";
    let dir = manifests(
        &echo,
        &format!(
            "{}{}{}{}",
            class("blue"),
            class("green"),
            route("blue"),
            route("green")
        ),
        &[("global.yaml", global)],
    );
    let blue = Gateway::start_standalone(dir.path(), &["--ingress-class", "blue"]);
    let green = Gateway::start_standalone(dir.path(), &["--ingress-class", "green"]);
    let ask = |gw: &Gateway| raw_request(gw.http, &handshake("ws.example.com", "/raw", &[]));
    wait_for("green to serve", Duration::from_secs(10), || {
        (ask(&green).status() == 101).then_some(())
    });
    let seen = echo.seen().len();
    let refused = ask(&blue);
    assert_eq!(refused.status(), 403, "{}", refused.raw);
    assert_eq!(refused.body(), "{\"message\":\"global rule\"}\n");
    assert_eq!(
        echo.seen().len(),
        seen,
        "the upstream never saw the refused handshake"
    );
    assert_eq!(ask(&green).status(), 101);
    // Deleting the global rule lifts it.
    std::fs::remove_file(dir.path().join("global.yaml")).unwrap();
    wait_for("blue without the rule", Duration::from_secs(10), || {
        (ask(&blue).status() == 101).then_some(())
    });
}

#[test]
fn a_consumers_own_limit_count_applies_beside_the_rules() {
    let echo = Echo::start(&[]);
    let route = std::fs::read_to_string(example_manifests(echo.addr).path().join("route.yaml"))
        .unwrap()
        + "    plugins:\n    - name: limit-count\n      enable: true\n      config: {count: 5, time_window: 60, key: consumer_name}\n";
    let jill = "apiVersion: apisix.apache.org/v2\nkind: ApisixConsumer\nmetadata: {name: jill, namespace: demo}\nspec:\n  authParameter: {keyAuth: {value: {key: jill-key}}}\n  plugins:\n  - name: limit-count\n    enable: true\n    config: {count: 1, time_window: 60, key: consumer_name, rejected_code: 429, rejected_msg: jill is over her quota}\n";
    let dir = manifests(&echo, &route, &[("jill.yaml", jill)]);
    let gw = Gateway::start_standalone(dir.path(), &[]);
    gw.wait_key("jill-key", 101);
    let over = handshake_with(&gw, "/raw", "jill-key");
    assert_eq!(over.status(), 429, "{}", over.raw);
    assert_eq!(over.body(), "{\"error_msg\":\"jill is over her quota\"}\n");
    assert_eq!(over.header("x-ratelimit-limit"), Some("1"));
    // jack has no plugins of his own: the rule's limit alone counts him.
    let jack = handshake_with(&gw, "/raw", KEY);
    assert_eq!(jack.status(), 101, "{}", jack.raw);
    assert_eq!(jack.header("x-ratelimit-limit"), Some("5"));
}
