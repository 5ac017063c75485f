use super::*;

fn client(base: &str) -> Client {
    executor_base::tls::install_default_provider();
    Client::new(
        reqwest::Client::new(),
        Url::parse(base).unwrap(),
        "u".into(),
        SecretString::from("t"),
    )
}

#[test]
fn urls_encode_job_names_and_keep_the_prefix() {
    let c = client("http://127.0.0.1:8080/jenkins/");
    assert_eq!(
        c.job_url("SD 1/x?", &["api", "json"], &[("tree", "a[b]")])
            .as_str(),
        "http://127.0.0.1:8080/jenkins/job/SD%201%2Fx%3F/api/json?tree=a%5Bb%5D"
    );
    assert_eq!(
        c.url(&["createItem"], &[("name", "SD-1")]).as_str(),
        "http://127.0.0.1:8080/jenkins/createItem?name=SD-1"
    );
    let root = client("http://127.0.0.1:8080/");
    assert_eq!(
        root.url(&["queue", "item", "7", "api", "json"], &[]).path(),
        "/queue/item/7/api/json"
    );
    assert!(!format!("{root:?}").contains("\"t\""));
}

#[test]
fn folder_segments_are_encoded_in_every_job_url() {
    let c = client("http://127.0.0.1:8080/jenkins/")
        .with_folder(Folder::parse("team a/ci%2F/ü?#").unwrap());
    let f = "/jenkins/job/team%20a/job/ci%252F/job/%C3%BC%3F%23";
    assert_eq!(
        c.job_url("SD-1", &["1", "stop"], &[]).path(),
        format!("{f}/job/SD-1/1/stop")
    );
    let create = c.folder_url(&["createItem"], &[("name", "SD-1")]);
    assert_eq!(create.path(), format!("{f}/createItem"));
    assert_eq!(create.query(), Some("name=SD-1"));
    assert_eq!(
        c.folder_url(&["api", "json"], &[]).path(),
        format!("{f}/api/json")
    );
    // The queue is global: never under the folder.
    assert_eq!(
        c.url(&["queue", "cancelItem"], &[]).path(),
        "/jenkins/queue/cancelItem"
    );
    assert!(format!("{c:?}").contains("team a/ci%2F/ü?#"));
}

#[test]
fn queue_ids_come_from_location() {
    assert_eq!(
        queue_id_from_location("http://j:8080/queue/item/42/"),
        Some(42)
    );
    assert_eq!(
        queue_id_from_location("http://j/jenkins/queue/item/7"),
        Some(7)
    );
    assert_eq!(queue_id_from_location("http://j/job/SD-1/"), None);
    assert_eq!(queue_id_from_location("http://j/queue/item/x/"), None);
}
