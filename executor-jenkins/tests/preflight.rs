//! Pre-flight against the fake Jenkins (which answers `/label/<label>/api/json` as core
//! `hudson.model.Label` exports it): credentials, the job template's plugins, and an
//! online executor for the build's node label. A missing plugin, a label without an
//! online agent, refused credentials and an unreachable Jenkins are each one finding
//! naming the plugin, label, user or address.

mod common;

use std::time::{Duration, Instant};

use common::{BUILD_TOKEN, build};
use executor_base::{Executor, Level, Preflight, StartConfig};
use executor_jenkins::JenkinsExecutorBuilder;
use executor_jenkins::fake::FakeJenkins;

fn finding<'a>(p: &'a Preflight, check: &str) -> &'a executor_base::Finding {
    p.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no finding {check} in {p:#?}"))
}

#[tokio::test]
async fn defaults_pass_and_the_answer_is_cached() {
    let (j, e) = common::setup().await;
    let p = e.preflight(&build(1)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(p.backend, "jenkins");
    assert_eq!(finding(&p, "jenkins.credentials").level, Level::Ok);
    assert_eq!(finding(&p, "jenkins.plugin.build-timeout").level, Level::Ok);
    let a = finding(&p, "jenkins.agents");
    assert_eq!(a.level, Level::Ok);
    assert!(a.message.contains("label 'screwdriver'"), "{}", a.message);
    assert!(a.message.contains("2 online executor"), "{}", a.message);
    let asked = j.requests().len();
    assert_eq!(e.preflight(&build(2)).await.unwrap(), p);
    assert_eq!(
        j.requests().len(),
        asked,
        "same node label: answered from the cache"
    );
}

#[tokio::test]
async fn a_label_without_an_online_agent_fails_naming_it() {
    let (j, _) = common::setup().await;
    let e = j
        .executor_builder()
        .with_option("preflight.cacheMs", "0")
        .build()
        .await
        .unwrap();
    j.set_agent_online("agent-1", false);
    let p = e.preflight(&build(3)).await.unwrap();
    assert!(!p.passed());
    let a = finding(&p, "jenkins.agents");
    assert_eq!(a.level, Level::Fail);
    assert!(a.message.contains("'screwdriver'"), "{}", a.message);
    assert!(a.message.contains("agent-1"), "{}", a.message);

    // The build's own node label (upstream: `<nodeLabel>-<annotation>`).
    j.set_agent_online("agent-1", true);
    let gpu = StartConfig::builder(4, "http://127.0.0.1:9/api", "node:22", BUILD_TOKEN)
        .annotation("screwdriver.cd/nodeLabel", "gpu")
        .build()
        .unwrap();
    let p = e.preflight(&gpu).await.unwrap();
    let a = finding(&p, "jenkins.agents");
    assert_eq!(a.level, Level::Fail);
    assert!(
        a.message
            .contains("no Jenkins node has label 'screwdriver-gpu'"),
        "{}",
        a.message
    );
    j.add_agent("gpu-1", &["screwdriver-gpu"], 1);
    let p = e.preflight(&gpu).await.unwrap();
    assert!(p.passed(), "{p:#?}");

    j.remove_agents();
    let p = e.preflight(&build(5)).await.unwrap();
    assert_eq!(finding(&p, "jenkins.agents").level, Level::Fail);
}

#[tokio::test]
async fn a_missing_plugin_is_a_finding_naming_it() {
    let (j, _) = common::setup().await;
    // Defaults: the executor enforces job timeouts itself, so a missing build-timeout
    // plugin is a warning naming it and the option that makes it a failure.
    let e = j
        .executor_builder()
        .with_option("preflight.cacheMs", "0")
        .build()
        .await
        .unwrap();
    let strict = j
        .executor_builder()
        .with_option("preflight.cacheMs", "0")
        .with_option("requireTimeoutPlugin", "true")
        .build()
        .await
        .unwrap();
    j.uninstall_plugin("build-timeout");
    let p = e.preflight(&build(6)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    let f = finding(&p, "jenkins.plugin.build-timeout");
    assert_eq!(f.level, Level::Warn);
    assert!(f.message.contains("requireTimeoutPlugin"), "{}", f.message);
    let p = strict.preflight(&build(7)).await.unwrap();
    assert!(!p.passed());
    let f = finding(&p, "jenkins.plugin.build-timeout");
    assert_eq!(f.level, Level::Fail);
    assert!(
        f.message.contains("build-timeout is not installed"),
        "{}",
        f.message
    );

    // A plugin list the user may not read: a warning saying what cannot be checked.
    j.install_plugin("build-timeout");
    j.deny("Overall/SystemRead");
    let p = e.preflight(&build(8)).await.unwrap();
    assert_eq!(finding(&p, "jenkins.plugins").level, Level::Warn);
}

#[tokio::test]
async fn refused_credentials_and_an_unreachable_jenkins_fail_naming_them() {
    let j = FakeJenkins::start().await;
    let (user, _) = j.credentials();
    let e = j
        .executor_builder()
        .with_credentials(user.clone(), "not-the-token")
        .build()
        .await
        .unwrap();
    let p = e.preflight(&build(9)).await.unwrap();
    assert!(!p.passed());
    let c = finding(&p, "jenkins.credentials");
    assert_eq!(c.level, Level::Fail);
    assert!(
        c.message.contains(&format!("user '{user}'")),
        "{}",
        c.message
    );
    assert!(c.message.contains("401"), "{}", c.message);
    assert!(!c.message.contains("not-the-token"), "{}", c.message);
    assert!(p.findings.iter().all(|f| f.check != "jenkins.agents"));

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let e = JenkinsExecutorBuilder::new()
        .with_url(&url)
        .with_credentials("sdx", "token")
        .with_request_timeout(Duration::from_millis(300))
        .with_option("preflight.timeoutMs", "500")
        .build()
        .await
        .unwrap();
    let t = Instant::now();
    let p = e.preflight(&build(10)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let c = finding(&p, "jenkins.credentials");
    assert_eq!(c.level, Level::Fail);
    assert!(c.message.contains(&url), "{}", c.message);
}
