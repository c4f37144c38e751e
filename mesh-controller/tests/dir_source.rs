//! The directory source: only changed files are re-parsed, a removed file takes its objects
//! with it, nested directories and hidden files are handled.

use mesh_controller::controller::Controller;
use mesh_controller::source::dir::DirSource;
use mesh_controller::translate::TranslateOptions;

fn pod(name: &str, ip: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: n, containers: [{{name: c}}]}}\nstatus: {{podIP: {ip}}}\n")
}

#[test]
fn scans_apply_only_changes_and_removals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nested = dir.path().join("team-a");
    std::fs::create_dir(&nested).expect("nested dir");
    std::fs::write(dir.path().join("a.yaml"), pod("a", "10.0.0.1")).expect("write a");
    std::fs::write(nested.join("b.yml"), pod("b", "10.0.0.2")).expect("write b");
    std::fs::write(dir.path().join(".hidden.yaml"), pod("h", "10.0.0.3")).expect("write hidden");
    std::fs::write(dir.path().join("notes.txt"), "not config").expect("write txt");
    let controller = Controller::new(TranslateOptions::default());
    let mut source = DirSource::new(dir.path(), controller.clone());

    assert_eq!(source.scan().expect("first scan"), 2, "two config files");
    let names = |c: &Controller| -> Vec<String> {
        c.current()
            .snapshot
            .workloads
            .iter()
            .map(|w| w.name.clone())
            .collect()
    };
    assert_eq!(names(&controller), ["a", "b"]);
    let v1 = controller.current().version.clone();

    assert_eq!(source.scan().expect("idle scan"), 0, "nothing changed");
    assert_eq!(controller.current().version, v1);

    std::fs::write(nested.join("b.yml"), pod("b", "10.0.0.9")).expect("rewrite b");
    assert_eq!(
        source.scan().expect("scan after edit"),
        1,
        "only the edited file"
    );
    assert_ne!(controller.current().version, v1);

    std::fs::remove_file(dir.path().join("a.yaml")).expect("remove a");
    assert_eq!(source.scan().expect("scan after removal"), 1);
    assert_eq!(names(&controller), ["b"]);

    // A file turning invalid reports errors (with its relative path) and drops its objects.
    std::fs::write(
        nested.join("b.yml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n",
    )
    .expect("break b");
    source.scan().expect("scan after breakage");
    let current = controller.current();
    assert!(current.snapshot.workloads.is_empty());
    assert_eq!(current.errors.len(), 1);
    assert!(
        current.errors[0].origin.starts_with("team-a/b.yml"),
        "{}",
        current.errors[0]
    );
}

#[test]
fn a_missing_directory_is_an_error_not_a_panic() {
    let controller = Controller::new(TranslateOptions::default());
    let mut source = DirSource::new(std::path::Path::new("/nonexistent/mesh-config"), controller);
    let err = source.scan().expect_err("missing directory");
    assert!(
        err.to_string().contains("/nonexistent/mesh-config"),
        "{err}"
    );
}
