//! The fake Jenkins answers as Jenkins core's source says a controller does. Each test
//! pins one behaviour with raw HTTP (no executor), and names its source: core
//! `jenkinsci/jenkins` (2.479 unless a version is given), the build-timeout plugin, and
//! the review `shared/research/jenkins-real-controller.md` that collected them.

use std::time::Duration;

use executor_jenkins::fake::{FAKE_TOKEN, FAKE_USER, FakeJenkins, FakeOptions};
use reqwest::StatusCode;
use reqwest::header::LOCATION;

const PARAMS: &str = "<properties><hudson.model.ParametersDefinitionProperty><parameterDefinitions>\
    <hudson.model.StringParameterDefinition><name>A</name><defaultValue>d</defaultValue></hudson.model.StringParameterDefinition>\
    <hudson.model.PasswordParameterDefinition><name>SD_TOKEN</name></hudson.model.PasswordParameterDefinition>\
    </parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>";

fn job_xml(extra: &str) -> String {
    format!("<project><description>d</description>{PARAMS}{extra}</project>")
}

const TIMEOUT_WRAPPER: &str = "<buildWrappers>\
    <hudson.plugins.build__timeout.BuildTimeoutWrapper plugin=\"build-timeout@1.33\">\
    <strategy class=\"hudson.plugins.build_timeout.impl.AbsoluteTimeOutStrategy\"><timeoutMinutes>35</timeoutMinutes></strategy>\
    <operationList><hudson.plugins.build__timeout.operations.WriteDescriptionOperation>\
    <description>sdx-timeout: the job's own timeout of {0} minutes for #$BUILD_NUMBER</description>\
    </hudson.plugins.build__timeout.operations.WriteDescriptionOperation>\
    <hudson.plugins.build__timeout.operations.AbortOperation/></operationList>\
    </hudson.plugins.build__timeout.BuildTimeoutWrapper></buildWrappers>";

struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(j: &FakeJenkins) -> Self {
        // reqwest is built without a provider of its own: the workspace's one (ring).
        executor_base::tls::install_default_provider();
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("{}{}", j.url(), j.path_prefix()),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .basic_auth(FAKE_USER, Some(FAKE_TOKEN))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, content_type: Option<&str>, body: &str) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(FAKE_USER, Some(FAKE_TOKEN))
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req.send().await.unwrap()
    }

    async fn create(&self, name: &str, xml: &str) -> reqwest::Response {
        self.post(
            &format!("createItem?name={name}"),
            Some("application/xml"),
            xml,
        )
        .await
    }

    async fn trigger(&self, job: &str, form: &str) -> reqwest::Response {
        self.post(
            &format!("job/{job}/buildWithParameters?delay=0sec"),
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .await
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn cancel_item_answers_by_the_state_of_the_item() {
    // core hudson/model/Queue.java doCancelItem (JENKINS-21311, ≈2.212): 204 waiting;
    // 500 "Could not cancel run for id N" when Item.cancel is false (LeftItem.leave);
    // 422 without Item.CANCEL; 404 unknown or expired.
    let j = FakeJenkins::start().await;
    let raw = Raw::new(&j);
    assert_eq!(raw.create("SD-1", &job_xml("")).await.status(), 200);
    raw.trigger("SD-1", "A=1").await;
    raw.trigger("SD-1", "A=2").await;
    let r = raw.post("queue/cancelItem?id=1", None, "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    j.start_queued("SD-1").unwrap(); // item 2 leaves the queue for build #1
    let r = raw.post("queue/cancelItem?id=2", None, "").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Could not cancel run for id 2")
    );
    let r = raw.post("queue/cancelItem?id=1", None, "").await;
    assert_eq!(r.status(), 500, "a cancelled item has left the queue too");
    let r = raw.post("queue/cancelItem?id=9", None, "").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Provided id (9) not found")
    );
    raw.trigger("SD-1", "A=3").await;
    j.deny("Job/Cancel");
    let r = raw.post("queue/cancelItem?id=3", None, "").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("is not cancellable"));
    assert_eq!(
        j.forget_left_items("SD-1"),
        2,
        "after 5 minutes (leftItems cache)"
    );
    assert_eq!(
        raw.post("queue/cancelItem?id=2", None, "").await.status(),
        404
    );

    // Before ≈2.212 every answer was forwardToPreviousPage: 302.
    let old = FakeJenkins::start_with(FakeOptions {
        version: "2.204.6".into(),
        ..FakeOptions::default()
    })
    .await;
    let raw = Raw::new(&old);
    raw.create("SD-1", &job_xml("")).await;
    raw.trigger("SD-1", "A=1").await;
    assert_eq!(
        raw.post("queue/cancelItem?id=1", None, "").await.status(),
        302
    );
    assert!(old.queue_items("SD-1")[0].cancelled);
}

#[tokio::test]
async fn build_with_parameters_answers_as_parameterized_job_mixin() {
    // core jenkins/model/ParameterizedJobMixIn.java doBuildWithParameters and
    // hudson/model/ParametersDefinitionProperty.java _doBuildWithParameters.
    let j = FakeJenkins::start().await;
    let raw = Raw::new(&j);
    raw.create("SD-1", &job_xml("")).await;
    let r = raw.trigger("SD-1", "A=1&UNDECLARED=x").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(location(&r).ends_with("/queue/item/1/"), "{}", location(&r));
    let items = j.queue_items("SD-1");
    assert_eq!(
        items[0].params.keys().collect::<Vec<_>>(),
        ["A", "SD_TOKEN"],
        "declared parameters only, missing ones at their default"
    );
    // Identical parameters of a still queued item are merged: 303 to it (since 2.308).
    let r = raw.trigger("SD-1", "A=1").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).ends_with("/queue/item/1/"));
    assert_eq!(j.queue_items("SD-1").len(), 1);
    // A refused schedule (a QueueDecisionHandler veto): 302 to the job, no item.
    j.refuse_next_schedules(1);
    let r = raw.trigger("SD-1", "A=2").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(location(&r).ends_with("/job/SD-1/"));
    assert_eq!(j.queue_items("SD-1").len(), 1);
    // A disabled job is not buildable: 409.
    j.disable_job("SD-1");
    let r = raw.trigger("SD-1", "A=3").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("SD-1 is not buildable"));
    // Without parameter definitions: 500 (IllegalStateException) before 2.525, 400 since.
    raw.create("plain", "<project/>").await;
    assert_eq!(raw.trigger("plain", "A=1").await.status(), 500);
    let new = FakeJenkins::start_with(FakeOptions {
        version: "2.525".into(),
        ..FakeOptions::default()
    })
    .await;
    let raw = Raw::new(&new);
    raw.create("plain", "<project/>").await;
    let r = raw.trigger("plain", "A=1").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("plain is not parameterized")
    );
}

#[tokio::test]
async fn items_wait_out_the_quiet_period_unless_delay_is_given() {
    // core Jenkins.getQuietPeriod (5 s by default) and Queue.Item.getWhy
    // (Messages.Queue_InQuietPeriod); `delay=0sec` (TimeDuration) skips it.
    let j = FakeJenkins::start().await;
    let raw = Raw::new(&j);
    raw.create("SD-1", &job_xml("")).await;
    let r = raw
        .post(
            "job/SD-1/buildWithParameters",
            Some("application/x-www-form-urlencoded"),
            "A=1",
        )
        .await;
    assert_eq!(r.status(), 201);
    let item = raw.json("queue/item/1/api/json").await;
    assert!(
        item["why"]
            .as_str()
            .unwrap()
            .starts_with("In the quiet period. Expires in"),
        "{item}"
    );
    assert_eq!(
        j.start_queued("SD-1"),
        None,
        "not before the quiet period ends"
    );
    raw.trigger("SD-1", "A=2").await;
    let item = raw.json("queue/item/2/api/json").await;
    assert_eq!(item["_class"], "hudson.model.Queue$BuildableItem");
    assert!(
        item["why"]
            .as_str()
            .unwrap()
            .starts_with("Waiting for next available executor")
    );
}

#[tokio::test]
async fn queue_and_build_json_have_jenkins_shape() {
    // core hudson/model/Queue.java: Item exports id, why, blocked, buildable, stuck, task…
    // but only LeftItem exports `cancelled` and `executable`, the latter null until the
    // executor thread created the Run; Run exports `queueId` and `timestamp`.
    let j = FakeJenkins::start_with(FakeOptions {
        executable_delay: Duration::from_millis(300),
        ..FakeOptions::default()
    })
    .await;
    let raw = Raw::new(&j);
    raw.create("SD-1", &job_xml("")).await;
    raw.trigger("SD-1", "A=1").await;
    let waiting = raw.json("queue/item/1/api/json").await;
    assert!(waiting.get("cancelled").is_none() && waiting.get("executable").is_none());
    let queued = raw.json("job/SD-1/api/json").await;
    assert!(queued["queueItem"].get("cancelled").is_none(), "{queued}");
    assert_eq!(j.start_queued("SD-1"), Some(1));
    let left = raw.json("queue/item/1/api/json").await;
    assert_eq!(left["_class"], "hudson.model.Queue$LeftItem");
    assert_eq!(left["cancelled"], false);
    assert!(left["executable"].is_null(), "{left}");
    assert_eq!(
        raw.get("job/SD-1/1/api/json").await.status(),
        404,
        "no Run yet"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let left = raw.json("queue/item/1/api/json").await;
    assert_eq!(left["executable"]["number"], 1);
    let build = raw.json("job/SD-1/1/api/json").await;
    assert_eq!(build["queueId"], 1);
    assert!(build["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(build["building"], true);
}

#[tokio::test]
async fn stop_is_asynchronous() {
    // core AbstractBuild.doStop → Executor.doStopBuild → interrupt(): 302 at once, the
    // build stays `building` until the executor thread unwound, then ABORTED.
    let j = FakeJenkins::start_with(FakeOptions {
        abort_delay: Duration::from_millis(300),
        ..FakeOptions::default()
    })
    .await;
    let raw = Raw::new(&j);
    raw.create("SD-1", &job_xml("")).await;
    raw.trigger("SD-1", "A=1").await;
    j.start_queued("SD-1").unwrap();
    let r = raw.post("job/SD-1/1/stop", None, "").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let b = raw.json("job/SD-1/1/api/json").await;
    assert_eq!(
        (b["building"].as_bool(), b["result"].is_null()),
        (Some(true), true)
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let b = raw.json("job/SD-1/1/api/json").await;
    assert_eq!(
        (b["building"].as_bool(), b["result"].as_str()),
        (Some(false), Some("ABORTED"))
    );
    // Freestyle builds have no /term or /kill (those are Pipeline's WorkflowRun).
    assert_eq!(raw.post("job/SD-1/1/term", None, "").await.status(), 404);
}

#[tokio::test]
async fn crumbs_are_needed_only_with_a_password_and_every_layout_page_says_crumb() {
    // core CrumbFilter + jenkins/security/ApiCrumbExclusion (since 2.96): API-token
    // requests skip the crumb check; password requests without one get
    // sendError(403, "No valid crumb was included in the request").
    let j = FakeJenkins::start().await;
    let raw = Raw::new(&j);
    assert_eq!(raw.create("SD-1", &job_xml("")).await.status(), 200);
    let r = raw
        .http
        .post(format!("{}createItem?name=SD-2", raw.base))
        .basic_auth(FAKE_USER, Some(j.password()))
        .header("Content-Type", "application/xml")
        .body(job_xml(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("No valid crumb was included in the request")
    );
    // A permission 403 is the access-denied page inside Jenkins' layout
    // (accessDenied.jelly, lib/layout/layout.jelly): it contains "crumb" too.
    j.deny("Job/Build");
    let r = raw.trigger("SD-1", "A=1").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(page.contains("screwdriver is missing the Job/Build permission"));
    assert!(page.contains("data-crumb-header") && !page.contains("No valid crumb"));
}

#[tokio::test]
async fn create_item_answers_as_item_group_mixin() {
    // core hudson/model/ItemGroupMixIn.java createTopLevelItem / createProjectFromXML:
    // 200; Failure (400, X-Error, header in ISO-8859-1 so ‘ ’ arrive as ?) for a name in
    // use, compared case-insensitively; 500 for XML it cannot persist; 400 without a
    // Content-Type.
    let j = FakeJenkins::start().await;
    let raw = Raw::new(&j);
    let r = raw.create("SD-1", &job_xml("")).await;
    assert_eq!(
        (r.status(), r.text().await.unwrap()),
        (StatusCode::OK, String::new())
    );
    let r = raw.create("sd-1", &job_xml("")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.headers()["X-Error"].to_str().unwrap(),
        "A job already exists with the name ?sd-1?"
    );
    assert_eq!(raw.json("job/sd-1/api/json").await["name"], "SD-1");
    let r = raw.create("SD-2", "<project><unclosed></project>").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Failed to persist config.xml")
    );
    let r = raw.post("createItem?name=SD-3", None, &job_xml("")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("No Content-Type header set")
    );
    assert_eq!(j.job_names(), ["SD-1"]);
}

#[tokio::test]
async fn elements_of_missing_plugins_are_dropped_silently() {
    // core hudson/util/RobustCollectionConverter + RobustReflectionConverter
    // (addErrorInContext): the job is created (200), without the element; GET
    // config.xml still answers the posted file.
    let j = FakeJenkins::start_with(FakeOptions {
        plugins: vec![],
        ..FakeOptions::default()
    })
    .await;
    let raw = Raw::new(&j);
    let xml = job_xml(TIMEOUT_WRAPPER);
    assert_eq!(raw.create("SD-1", &xml).await.status(), StatusCode::OK);
    let r = raw.get("job/SD-1/config.xml").await;
    assert_eq!(r.text().await.unwrap(), xml);
    assert!(!j.has_job_timeout("SD-1"));
    assert_eq!(j.old_data("SD-1").len(), 1, "{:?}", j.old_data("SD-1"));
    raw.trigger("SD-1", "A=1").await;
    j.start_queued("SD-1").unwrap();
    assert!(!j.fire_job_timeout("SD-1", 1), "no plugin, no timeout");
    // The plugin list (PluginManager.getApi needs Overall/SystemRead).
    let list = raw
        .json("pluginManager/api/json?tree=plugins[shortName,active]")
        .await;
    assert_eq!(list["plugins"].as_array().unwrap().len(), 0);
    j.install_plugin("build-timeout");
    let list = raw.json("pluginManager/api/json").await;
    assert_eq!(list["plugins"][0]["shortName"], "build-timeout");
    assert_eq!(list["plugins"][0]["active"], true);
    j.deny("Overall/SystemRead");
    let r = raw.get("pluginManager/api/json").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("missing the Overall/SystemRead permission")
    );
}

#[tokio::test]
async fn the_job_timeout_writes_its_description_through_message_format() {
    // build-timeout WriteDescriptionOperation.perform: EnvVars.expand, then
    // MessageFormat.format(msg, minutes): {0} is the timeout, but a lone ' starts a quoted
    // section that runs to the end: the quote vanishes and a later {0} stays as it is.
    let j = FakeJenkins::start_with(FakeOptions {
        abort_delay: Duration::ZERO,
        ..FakeOptions::default()
    })
    .await;
    let raw = Raw::new(&j);
    raw.create("SD-1", &job_xml(TIMEOUT_WRAPPER)).await;
    raw.trigger("SD-1", "A=1").await;
    j.start_queued("SD-1").unwrap();
    assert!(j.fire_job_timeout("SD-1", 1));
    let b = raw.json("job/SD-1/1/api/json").await;
    assert_eq!(b["result"], "ABORTED");
    assert_eq!(
        b["description"],
        "sdx-timeout: the jobs own timeout of {0} minutes for #1"
    );
    // Run.doSubmitDescription (Run.UPDATE): a build's description set over HTTP.
    let r = raw
        .post(
            "job/SD-1/1/submitDescription",
            Some("application/x-www-form-urlencoded"),
            "description=hello",
        )
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        raw.json("job/SD-1/1/api/json").await["description"],
        "hello"
    );
}

#[tokio::test]
async fn console_text_and_progressive_text_answer_as_core_does() {
    // core hudson/model/Run.java doConsoleText: the whole log as text/plain, 404 for a
    // build that does not exist. Stapler LargeText.doProgressText (through
    // AnnotatedLargeText.doProgressiveText): the log from `start` ("if (source.length()
    // < start) start = 0; // text rolled over"), X-Text-Size = the end offset, and
    // X-More-Data: true while the build is not complete. Core Run.execute ends the log
    // with "Finished: <result>".
    let j = FakeJenkins::start().await;
    let raw = Raw::new(&j);
    assert_eq!(raw.create("SD-1", &job_xml("")).await.status(), 200);
    raw.trigger("SD-1", "A=1").await;
    j.start_queued("SD-1").unwrap();
    assert_eq!(raw.get("job/SD-1/2/consoleText").await.status(), 404);
    j.append_console("SD-1", 1, "step output\n");
    let whole = j.console("SD-1", 1).unwrap();
    let r = raw.get("job/SD-1/1/logText/progressiveText?start=0").await;
    assert_eq!(r.status(), 200);
    let size: usize = r.headers()["X-Text-Size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(size, whole.len());
    assert_eq!(r.headers()["X-More-Data"], "true");
    assert_eq!(r.text().await.unwrap(), whole);
    // From an offset: only what follows it.
    let r = raw
        .get(&format!(
            "job/SD-1/1/logText/progressiveText?start={}",
            size - 5
        ))
        .await;
    assert_eq!(r.text().await.unwrap(), "tput\n");
    // Past the end: rolled over, from 0.
    let r = raw
        .get(&format!(
            "job/SD-1/1/logText/progressiveText?start={}",
            size + 100
        ))
        .await;
    assert_eq!(r.text().await.unwrap(), whole);
    j.finish("SD-1", 1, "SUCCESS");
    let r = raw.get("job/SD-1/1/logText/progressiveText?start=0").await;
    assert!(r.headers().get("X-More-Data").is_none(), "complete");
    let r = raw.get("job/SD-1/1/consoleText").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(text.starts_with("Started by"), "{text}");
    assert!(text.ends_with("Finished: SUCCESS\n"), "{text}");
}
