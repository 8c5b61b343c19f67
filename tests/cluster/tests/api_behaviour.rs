//! API semantics through `kube::Api` only, so they also run against a real kube-apiserver.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use wasmdaemon_testcluster::TestEnv;

const WAIT: Duration = Duration::from_secs(20);

fn cm(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data}))
        .expect("valid ConfigMap")
}

fn code_of(err: &kube::Error) -> Option<(u16, String)> {
    match err {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

async fn next_change(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> Result<(String, String)> {
    loop {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .context("no watch event in time")?
            .context("watch ended")??;
        let (kind, obj) = match event {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => bail!("watch error {e:?}"),
        };
        return Ok((kind.to_string(), obj.metadata.name.unwrap_or_default()));
    }
}

#[tokio::test]
async fn a_watch_from_a_list_resource_version_sees_every_later_change() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    cms.create(&PostParams::default(), &cm("a", json!({"k": "1"})))
        .await?;
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await?;
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await?;
    cms.delete("a", &DeleteParams::default()).await?;
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &rv)
        .await?
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_change(&mut stream).await?);
    }
    let expected = [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "a")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(seen, expected);
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn an_expired_resource_version_gives_410_and_a_relist_recovers() -> Result<()> {
    let env = TestEnv::new().await?;
    let Some(cluster) = env.faults("an_expired_resource_version_gives_410_and_a_relist_recovers")
    else {
        return Ok(());
    };
    let cms: Api<ConfigMap> = env.api();
    cms.create(&PostParams::default(), &cm("a", json!({})))
        .await?;
    let old_rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    cluster.compact_history();
    let mut stream = cms.watch(&WatchParams::default(), &old_rv).await?.boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => bail!("expected a 410 error event, got {other:?}"),
    }
    let relist = cms.list(&ListParams::default()).await?;
    let rv = relist.metadata.resource_version.unwrap_or_default();
    assert_eq!(relist.items.len(), 1);
    let mut stream = cms.watch(&WatchParams::default(), &rv).await?.boxed();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await?;
    assert_eq!(
        next_change(&mut stream).await?,
        ("ADDED".to_string(), "b".to_string())
    );
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_conflicts() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let first = cms
        .create(&PostParams::default(), &cm("a", json!({"k": "1"})))
        .await?;
    let mut fresh = first.clone();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    let updated = cms.replace("a", &PostParams::default(), &fresh).await?;
    assert_ne!(
        updated.metadata.resource_version,
        first.metadata.resource_version
    );
    let mut stale = first.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let err = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .expect_err("stale update");
    assert_eq!(code_of(&err), Some((409, "Conflict".to_string())));
    let again = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect_err("duplicate");
    assert_eq!(code_of(&again), Some((409, "AlreadyExists".to_string())));
    let missing = cms.get("nope").await.expect_err("missing");
    assert_eq!(code_of(&missing), Some((404, "NotFound".to_string())));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn an_unchanged_update_keeps_the_resource_version() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let first = cms
        .create(&PostParams::default(), &cm("a", json!({"k": "1"})))
        .await?;
    let same = cms.replace("a", &PostParams::default(), &first).await?;
    assert_eq!(
        same.metadata.resource_version,
        first.metadata.resource_version
    );
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches_differ_as_in_kubernetes() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    cms.create(
        &PostParams::default(),
        &cm("a", json!({"x": "1", "y": "2"})),
    )
    .await?;

    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"l": "v"}}, "data": {"x": null, "z": "3"}}),
            ),
        )
        .await?;
    let data = merged.data.clone().unwrap_or_default();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), ["y", "z"]);
    assert_eq!(
        merged
            .metadata
            .labels
            .unwrap_or_default()
            .get("l")
            .map(String::as_str),
        Some("v")
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/data/w", "value": "4"},
        {"op": "remove", "path": "/data/y"}
    ]))?;
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await?;
    let data = patched.data.unwrap_or_default();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), ["w", "z"]);
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/w", "value": "nope"}]))?;
    assert!(
        cms.patch("a", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .is_err()
    );

    let strategic = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"finalizers": ["test.wasmdaemon.io/a"]}})),
        )
        .await?;
    let strategic2 = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"finalizers": ["test.wasmdaemon.io/b"]}})),
        )
        .await?;
    assert_eq!(strategic.metadata.finalizers.unwrap_or_default().len(), 1);
    assert_eq!(
        strategic2.metadata.finalizers.clone().unwrap_or_default(),
        ["test.wasmdaemon.io/a", "test.wasmdaemon.io/b"]
    );
    let replaced = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    assert!(replaced.metadata.finalizers.unwrap_or_default().is_empty());

    let apply = |data: Value| {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        cm["metadata"] = json!({"name": "applied"});
        cm["data"] = data;
        cm
    };
    let pp = PatchParams::apply("manager-one");
    cms.patch(
        "applied",
        &pp,
        &Patch::Apply(apply(json!({"a": "1", "b": "2"}))),
    )
    .await?;
    let shrunk = cms
        .patch("applied", &pp, &Patch::Apply(apply(json!({"a": "1"}))))
        .await?;
    assert_eq!(
        shrunk
            .data
            .unwrap_or_default()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["a"]
    );
    let other = PatchParams::apply("manager-two");
    let err = cms
        .patch(
            "applied",
            &other,
            &Patch::Apply(apply(json!({"a": "other"}))),
        )
        .await
        .expect_err("conflict");
    assert_eq!(code_of(&err).map(|c| c.0), Some(409));
    let forced = cms
        .patch(
            "applied",
            &other.clone().force(),
            &Patch::Apply(apply(json!({"a": "other"}))),
        )
        .await?;
    assert_eq!(
        forced.data.unwrap_or_default().get("a").map(String::as_str),
        Some("other")
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"manager-two".to_string()),
        "{managers:?}"
    );
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn an_object_with_finalizers_stays_until_the_last_one_is_removed() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let mut obj = cm("held", json!({}));
    obj.metadata.finalizers = Some(vec![
        "test.wasmdaemon.io/one".into(),
        "test.wasmdaemon.io/two".into(),
    ]);
    cms.create(&PostParams::default(), &obj).await?;
    cms.delete("held", &DeleteParams::default()).await?;
    let deleting = cms.get("held").await?;
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let add = cms
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [
                "test.wasmdaemon.io/one", "test.wasmdaemon.io/two", "test.wasmdaemon.io/three"
            ]}})),
        )
        .await
        .expect_err("adding a finalizer while deleting");
    assert_eq!(code_of(&add), Some((422, "Invalid".to_string())));
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test.wasmdaemon.io/two"]}})),
    )
    .await?;
    assert!(cms.get_opt("held").await?.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await?;
    env.wait_until("the held ConfigMap is gone", WAIT, || async {
        matches!(cms.get_opt("held").await, Ok(None))
    })
    .await?;
    env.teardown().await?;
    Ok(())
}

async fn owner_and_dependents(
    cms: &Api<ConfigMap>,
    owner: &str,
    deps: &[&str],
    block: bool,
) -> Result<()> {
    let created = cms
        .create(&PostParams::default(), &cm(owner, json!({})))
        .await?;
    let uid = created.metadata.uid.clone().unwrap_or_default();
    for dep in deps {
        let obj: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": dep, "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid,
                "blockOwnerDeletion": block
            }]}}))?;
        cms.create(&PostParams::default(), &obj).await?;
    }
    Ok(())
}

#[tokio::test]
async fn background_deletion_collects_dependents_and_orphan_deletion_keeps_them() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    owner_and_dependents(&cms, "owner", &["dep-1", "dep-2"], false).await?;
    cms.delete("owner", &DeleteParams::background()).await?;
    env.wait_until(
        "dependents of a background-deleted owner are collected",
        WAIT,
        || async {
            let names: Vec<String> = match cms.list(&ListParams::default()).await {
                Ok(l) => l
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect(),
                Err(e) => return Err(e.to_string()),
            };
            if names.iter().any(|n| n.starts_with("dep-") || n == "owner") {
                Err(format!("still there: {names:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await?;

    owner_and_dependents(&cms, "keeper", &["orphan-1"], false).await?;
    cms.delete("keeper", &DeleteParams::orphan()).await?;
    env.wait_until("the orphaning owner is gone", WAIT, || async {
        matches!(cms.get_opt("keeper").await, Ok(None))
    })
    .await?;
    env.wait_until("the orphan has no owner reference", WAIT, || async {
        match cms.get_opt("orphan-1").await {
            Ok(Some(o)) => o.metadata.owner_references.unwrap_or_default().is_empty(),
            _ => false,
        }
    })
    .await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    owner_and_dependents(&cms, "fg-owner", &["fg-dep"], true).await?;
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test.wasmdaemon.io/hold"]}})),
    )
    .await?;
    cms.delete("fg-owner", &DeleteParams::foreground()).await?;
    env.wait_until("the dependent is being deleted", WAIT, || async {
        let dep = cms.get_opt("fg-dep").await;
        matches!(dep, Ok(Some(d)) if d.metadata.deletion_timestamp.is_some())
    })
    .await?;
    let owner = cms.get("fg-owner").await?;
    assert!(
        owner
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    env.wait_until("the owner is gone after its dependent", WAIT, || async {
        matches!(cms.get_opt("fg-owner").await, Ok(None))
    })
    .await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn label_and_field_selectors_handle_edge_cases() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    for (name, labels) in [
        ("one", json!({"tier": "web", "env": "prod"})),
        ("two", json!({"tier": "db"})),
        ("three", json!({})),
    ] {
        let obj: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
        cms.create(&PostParams::default(), &obj).await?;
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let mut n: Vec<String> = cms
                .list(&ListParams::default().labels(sel))
                .await?
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
            n.sort();
            Ok::<_, kube::Error>(n)
        }
    };
    assert_eq!(names("tier=web").await?, ["one"]);
    assert_eq!(names("tier==web").await?, ["one"]);
    assert_eq!(names("tier!=web").await?, ["three", "two"]);
    assert_eq!(names("tier in (web,db)").await?, ["one", "two"]);
    assert_eq!(names("tier notin (web)").await?, ["three", "two"]);
    assert_eq!(names("env").await?, ["one"]);
    assert_eq!(names("!env").await?, ["three", "two"]);
    assert_eq!(names("tier,!env").await?, ["two"]);
    assert_eq!(names("").await?, ["one", "three", "two"]);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=two"))
        .await?;
    assert_eq!(by_name.items.len(), 1);
    let not_name = cms
        .list(&ListParams::default().fields("metadata.name!=two"))
        .await?;
    assert_eq!(not_name.items.len(), 2);
    let bad = cms
        .list(&ListParams::default().labels("tier in web"))
        .await
        .expect_err("bad selector");
    assert_eq!(code_of(&bad).map(|c| c.0), Some(400));

    let mut pages = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = cms.list(&lp).await?;
        pages.push(page.items.len());
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, [2, 1]);
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn generate_name_gives_unique_names_with_the_prefix() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let mut obj = cm("", json!({}));
    obj.metadata.name = None;
    obj.metadata.generate_name = Some("gen-".into());
    let a = cms
        .create(&PostParams::default(), &obj)
        .await?
        .metadata
        .name
        .unwrap_or_default();
    let b = cms
        .create(&PostParams::default(), &obj)
        .await?
        .metadata
        .name
        .unwrap_or_default();
    assert_ne!(a, b);
    for n in [&a, &b] {
        assert!(n.starts_with("gen-") && n.len() == 9, "{n}");
    }
    obj.metadata.generate_name = None;
    let err = cms
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("no name");
    assert_eq!(code_of(&err), Some((422, "Invalid".to_string())));
    env.teardown().await?;
    Ok(())
}

struct Crd {
    api: Api<CustomResourceDefinition>,
    name: String,
    resource: ApiResource,
}

impl Crd {
    async fn create(env: &TestEnv, scope: &str) -> Result<Self> {
        let group = format!("{}.wasmdaemon.test", env.namespace());
        let kind = if scope == "Cluster" {
            "Gizmo"
        } else {
            "Widget"
        };
        let plural = format!("{}s", kind.to_lowercase());
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group,
                "scope": scope,
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true
                    }}
                }]
            }
        }))?;
        let api: Api<CustomResourceDefinition> = Api::all(env.client());
        env.install_crd(&crd).await?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", kind), &plural);
        Ok(Self {
            api,
            name,
            resource,
        })
    }

    fn objects(&self, env: &TestEnv, namespaced: bool) -> Api<DynamicObject> {
        if namespaced {
            Api::namespaced_with(env.client(), env.namespace(), &self.resource)
        } else {
            Api::all_with(env.client(), &self.resource)
        }
    }

    async fn delete(self) -> Result<()> {
        self.api
            .delete(&self.name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

async fn wait_servable(env: &TestEnv, api: &Api<DynamicObject>) -> Result<()> {
    env.wait_until("the custom resource is served", WAIT, || async {
        api.list(&ListParams::default()).await.is_ok()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_status_subresource_is_separate_from_the_main_resource() -> Result<()> {
    let env = TestEnv::new().await?;
    let crd = Crd::create(&env, "Namespaced").await?;
    let api = crd.objects(&env, true);
    wait_servable(&env, &api).await?;
    let obj = DynamicObject::new("w", &crd.resource)
        .data(json!({"spec": {"size": 1}, "status": {"ready": true}}));
    let created = api.create(&PostParams::default(), &obj).await?;
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let status = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 9}, "status": {"ready": true}})),
        )
        .await?;
    assert_eq!(
        status.data["spec"]["size"], 1,
        "a status write ignores spec"
    );
    assert_eq!(status.data["status"]["ready"], true);
    assert_eq!(
        status.metadata.generation,
        Some(1),
        "a status write keeps the generation"
    );

    let main = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}, "status": {"ready": false}})),
        )
        .await?;
    assert_eq!(
        main.data["status"]["ready"], true,
        "the main resource ignores status"
    );
    assert_eq!(main.data["spec"]["size"], 2);
    assert_eq!(
        main.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );

    let labelled = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await?;
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "a metadata change keeps the generation"
    );
    crd.delete().await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn custom_resources_of_a_new_crd_support_crud_in_both_scopes() -> Result<()> {
    let env = TestEnv::new().await?;
    for (scope, namespaced) in [("Namespaced", true), ("Cluster", false)] {
        let crd = Crd::create(&env, scope).await?;
        let api = crd.objects(&env, namespaced);
        wait_servable(&env, &api).await?;
        let name = format!("{}-x", env.namespace());
        let obj = DynamicObject::new(&name, &crd.resource).data(json!({"spec": {"n": 1}}));
        api.create(&PostParams::default(), &obj).await?;
        let mut got = api.get(&name).await?;
        assert_eq!(got.data["spec"]["n"], 1);
        got.data["spec"]["n"] = json!(2);
        let replaced = api.replace(&name, &PostParams::default(), &got).await?;
        assert_eq!(replaced.data["spec"]["n"], 2);
        let strategic = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"n": 3}})),
            )
            .await;
        assert_eq!(
            strategic.as_ref().err().and_then(code_of).map(|c| c.0),
            Some(415),
            "custom resources reject strategic merge"
        );
        let listed = api.list(&ListParams::default()).await?;
        assert!(
            listed
                .items
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(name.as_str()))
        );
        api.delete(&name, &DeleteParams::default()).await?;
        env.wait_until("the custom resource is gone", WAIT, || async {
            matches!(api.get_opt(&name).await, Ok(None))
        })
        .await?;
        crd.delete().await?;
    }
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> =
        Api::namespaced(env.client(), &format!("{}-missing", env.namespace()));
    let err = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect_err("no namespace");
    assert_eq!(code_of(&err).map(|c| c.0), Some(404));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn list_watch_through_the_runtime_watcher_sees_all_objects() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await?;
    }
    let (reader, writer) = kube::runtime::reflector::store::<ConfigMap>();
    let stream = kube::runtime::reflector(
        writer,
        kube::runtime::watcher(cms.clone(), Default::default()),
    );
    let task = tokio::spawn(stream.try_for_each(|_| async { Ok(()) }));
    env.wait_until("the reflector holds all five", WAIT, || async {
        reader.state().len() == 5
    })
    .await?;
    task.abort();
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn events_written_through_events_v1_are_visible_as_core_events() -> Result<()> {
    let env = TestEnv::new().await?;
    let v1: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "ev-1"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reportingController": "wasmdaemon.io/test",
        "reportingInstance": "test-1",
        "action": "Testing",
        "reason": "Tested",
        "type": "Normal",
        "note": "hello",
        "regarding": {
            "kind": "ConfigMap", "name": "x", "namespace": env.namespace(), "apiVersion": "v1"
        },
    }))?;
    v1.create(&PostParams::default(), &event).await?;
    let core: Api<k8s_openapi::api::core::v1::Event> = env.api();
    let seen = core.get("ev-1").await?;
    assert_eq!(seen.message.as_deref(), Some("hello"));
    assert_eq!(seen.involved_object.name.as_deref(), Some("x"));
    let back = v1.get("ev-1").await?;
    assert_eq!(back.note.as_deref(), Some("hello"));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn leases_and_controller_revisions_support_optimistic_updates() -> Result<()> {
    let env = TestEnv::new().await?;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = env.api();
    let lease: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))?;
    let created = leases.create(&PostParams::default(), &lease).await?;
    let mut taken = created.clone();
    taken
        .spec
        .get_or_insert_with(Default::default)
        .holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &taken)
        .await?;
    let err = leases
        .replace("leader", &PostParams::default(), &created)
        .await
        .expect_err("stale lease");
    assert_eq!(code_of(&err).map(|c| c.0), Some(409));

    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> = env.api();
    let rev: k8s_openapi::api::apps::v1::ControllerRevision = serde_json::from_value(json!({
        "metadata": {"name": "rev-1", "labels": {"set": "a"}},
        "revision": 1,
        "data": {"spec": {"x": 1}}
    }))?;
    revisions.create(&PostParams::default(), &rev).await?;
    let listed = revisions
        .list(&ListParams::default().labels("set=a"))
        .await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].revision, 1);
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn strategic_merge_keeps_other_containers_where_a_merge_patch_would_replace_them()
-> Result<()> {
    let env = TestEnv::new().await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = env.api();
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "two"},
        "spec": {"schedulerName": "nobody", "containers": [
            {"name": "a", "image": "registry.example/a:1"},
            {"name": "b", "image": "registry.example/b:1"}
        ]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let change = json!({"spec": {"containers": [{"name": "b", "image": "registry.example/b:2"}]}});
    let patched = pods
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Strategic(change.clone()),
        )
        .await?;
    let images: Vec<String> = patched
        .spec
        .unwrap_or_default()
        .containers
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    assert_eq!(images, ["registry.example/a:1", "registry.example/b:2"]);
    let err = pods
        .patch("two", &PatchParams::default(), &Patch::Merge(change))
        .await
        .expect_err("containers are immutable");
    assert_eq!(code_of(&err), Some((422, "Invalid".to_string())));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn invalid_names_and_labels_are_rejected_as_invalid() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let upper = cms
        .create(&PostParams::default(), &cm("Upper", json!({})))
        .await
        .expect_err("bad name");
    assert_eq!(code_of(&upper), Some((422, "Invalid".to_string())));
    let mut labelled = cm("labelled", json!({}));
    labelled.metadata.labels = Some([("ok".to_string(), "-bad-".to_string())].into());
    let bad = cms
        .create(&PostParams::default(), &labelled)
        .await
        .expect_err("bad label");
    assert_eq!(code_of(&bad), Some((422, "Invalid".to_string())));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn a_selector_watch_sees_objects_enter_and_leave_the_selection() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let wp = WatchParams::default().labels("team=a").timeout(30);
    let mut stream = cms.watch(&wp, &rv).await?.boxed();
    let mut obj = cm("mover", json!({}));
    obj.metadata.labels = Some([("team".to_string(), "b".to_string())].into());
    cms.create(&PostParams::default(), &obj).await?;
    let relabel = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    cms.patch("mover", &PatchParams::default(), &relabel("a"))
        .await?;
    cms.patch("mover", &PatchParams::default(), &relabel("b"))
        .await?;
    let first = next_change(&mut stream).await?;
    let second = next_change(&mut stream).await?;
    assert_eq!(first, ("ADDED".to_string(), "mover".to_string()));
    assert_eq!(second, ("DELETED".to_string(), "mover".to_string()));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn a_watch_ends_after_its_timeout() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await?
        .boxed();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            event?;
        }
        Ok::<_, kube::Error>(())
    })
    .await;
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn delete_collection_removes_only_the_selected_objects() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    for (name, team) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        let mut obj = cm(name, json!({}));
        obj.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        cms.create(&PostParams::default(), &obj).await?;
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=a"),
    )
    .await?;
    env.wait_until("only the b object is left", WAIT, || async {
        match cms.list(&ListParams::default()).await {
            Ok(l) => {
                let names: Vec<String> = l
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect();
                if names == ["b1"] {
                    Ok(())
                } else {
                    Err(format!("{names:?}"))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn a_json_patch_testing_for_absent_finalizers_adds_the_first_one() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    cms.create(&PostParams::default(), &cm("fin", json!({})))
        .await?;
    let add_first: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["test.wasmdaemon.io/x"]}
    ]))?;
    let added = cms
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::<()>::Json(add_first.clone()),
        )
        .await?;
    assert_eq!(
        added.metadata.finalizers.unwrap_or_default(),
        ["test.wasmdaemon.io/x"]
    );
    let again = cms
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::<()>::Json(add_first),
        )
        .await;
    assert_eq!(
        again.err().as_ref().and_then(code_of).map(|c| c.0),
        Some(422)
    );
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn the_runtime_event_recorder_publishes_and_repeats_events() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let target = cms
        .create(&PostParams::default(), &cm("noisy", json!({})))
        .await?;
    let reporter = kube::runtime::events::Reporter {
        controller: "wasmdaemon-test".into(),
        instance: None,
    };
    let recorder = kube::runtime::events::Recorder::new(env.client(), reporter);
    let reference = kube::Resource::object_ref(&target, &());
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Testing".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await?;
    recorder.publish(&event, &reference).await?;
    let core: Api<k8s_openapi::api::core::v1::Event> = env.api();
    let listed = core.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].message.as_deref(), Some("hello"));
    let v1: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let series = v1.list(&ListParams::default()).await?.items[0]
        .series
        .clone();
    assert_eq!(series.map(|s| s.count), Some(2));
    env.teardown().await?;
    Ok(())
}

#[tokio::test]
async fn reapplying_an_unchanged_configuration_keeps_the_resource_version() -> Result<()> {
    let env = TestEnv::new().await?;
    let cms: Api<ConfigMap> = env.api();
    let config = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stable"}, "data": {"a": "1"}
    });
    let pp = PatchParams::apply("steady-manager");
    let first = cms
        .patch("stable", &pp, &Patch::Apply(config.clone()))
        .await?;
    let second = cms.patch("stable", &pp, &Patch::Apply(config)).await?;
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    env.teardown().await?;
    Ok(())
}
