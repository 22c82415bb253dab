//! What a MongoDB list page costs: round trips, plans and documents examined.

use std::time::Instant;

use reliquary::domain::visibility::Visibility;
use reliquary::store::{ArtefactStore, BrowseQuery};
use reliquary_client::types::Timestamp;

use crate::{artefact, row};

/// MongoDB: not times (the test server is a Python surrogate) but what a page costs on any
/// MongoDB: the round trips the store makes (every command the driver sends, counted by the
/// driver's command monitoring), the plan of each query (`explain`), and the documents the plan
/// walks: an index scan in the sort order with the limit pushed down reads the index range from
/// the cursor to the page's last item, and no further.
pub async fn mongo_list_plans(url: &str) {
    use futures::StreamExt;
    use mongodb::bson::{doc, Bson, Document};
    use mongodb::event::command::CommandEvent;
    use mongodb::event::EventHandler;
    use reliquary::store::mongo::MongoStore;
    use std::sync::{Arc, Mutex};

    let count: usize = std::env::var("RELIQUARY_BENCH_MONGO_ARTEFACTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let db_name = format!("bench_{}", std::process::id());
    let sent: Arc<Mutex<Vec<(String, Document)>>> = Arc::default();
    let mut options =
        mongodb::options::ClientOptions::parse(format!("{url}/{db_name}?retryWrites=false"))
            .await
            .unwrap();
    let sink = sent.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            sink.lock()
                .unwrap()
                .push((started.command_name, started.command));
        }
    }));
    let store = MongoStore::from_options(options).unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::now();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| store.put(artefact(i, now), None))
        .buffer_unordered(8)
        .for_each(|result| async move {
            result.unwrap();
        })
        .await;
    eprintln!(
        "bench: {count} artefacts written to MongoDB in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let db = mongodb::Client::with_uri_str(format!("{url}/?retryWrites=false"))
        .await
        .unwrap()
        .database(&db_name);

    // The plan of a command the store sent, as its stages from the top: LIMIT > FETCH > IXSCAN.
    let plan_of = |command: Document| {
        let db = db.clone();
        async move {
            let mut find = Document::new();
            for (key, value) in command {
                if !key.starts_with('$') && !["lsid", "txnNumber"].contains(&key.as_str()) {
                    find.insert(key, value);
                }
            }
            let explained = db
                .run_command(doc! {"explain": find, "verbosity": "queryPlanner"})
                .await
                .unwrap();
            let mut stage = explained
                .get_document("queryPlanner")
                .and_then(|planner| planner.get_document("winningPlan"))
                .unwrap()
                .clone();
            let mut stages = Vec::new();
            loop {
                let name = stage.get_str("stage").unwrap_or("?").to_owned();
                stages.push(match stage.get_str("indexName") {
                    Ok(index) => format!("{name}({index})"),
                    Err(_) => name,
                });
                match stage.get_document("inputStage") {
                    Ok(input) => stage = input.clone(),
                    Err(_) => break,
                }
            }
            stages.join(" > ")
        }
    };
    let walked = |collection: &'static str, filter: Document| {
        let db = db.clone();
        async move {
            db.collection::<Document>(collection)
                .count_documents(filter)
                .await
                .unwrap()
        }
    };
    let take = || std::mem::take(&mut *sent.lock().unwrap());

    for (label, after) in [
        ("browse, first page", String::new()),
        (
            "browse, page from the middle",
            format!("pkg{:06}@1", count / 2),
        ),
    ] {
        take();
        let page = store
            .browse(
                &BrowseQuery {
                    after: (!after.is_empty()).then(|| after.clone()),
                    limit: 51,
                    ..Default::default()
                },
                &Visibility::releases(),
            )
            .await
            .unwrap();
        let commands = take();
        let last = &page.last().unwrap().id;
        let mut plans = Vec::new();
        for (name, command) in commands.iter().filter(|(name, _)| name == "find") {
            plans.push(format!("{name}: {}", plan_of(command.clone()).await));
        }
        let examined = if plans.iter().any(|plan| plan.contains("COLLSCAN")) {
            walked("artefacts", doc! {}).await
        } else {
            walked("artefacts", doc! {"_id": {"$gt": &after, "$lte": last}}).await
        };
        row(
            "Lists (MongoDB)",
            &format!("{label}, 51 of {count} artefacts, releases-only filter"),
            format!(
                "{} round trip(s); {examined} documents examined for {} returned; plan {}",
                commands.len(),
                page.len(),
                plans.join("; ")
            ),
            "-".into(),
            "-".into(),
            "reported, not timed",
        );
    }

    let since = (count / 2) as i64;
    take();
    let changes = store
        .changes(since, 50, &Visibility::releases())
        .await
        .unwrap();
    let commands = take();
    let last_seq = changes.items.last().unwrap().seq();
    let mut plans = Vec::new();
    for (name, command) in commands.iter().filter(|(name, _)| name == "find") {
        let collection = match command.get("find") {
            Some(Bson::String(collection)) => collection.clone(),
            _ => "?".into(),
        };
        plans.push(format!(
            "{name} {collection}: {}",
            plan_of(command.clone()).await
        ));
    }
    let range = doc! {"seq": {"$gt": since, "$lte": last_seq}};
    let examined = if plans.iter().any(|plan| plan.contains("COLLSCAN")) {
        walked("artefacts", doc! {}).await + walked("tombstones", doc! {}).await
    } else {
        walked("artefacts", range.clone()).await + walked("tombstones", range).await
    };
    let names: Vec<&str> = commands.iter().map(|(name, _)| name.as_str()).collect();
    row(
        "Lists (MongoDB)",
        &format!("sync page of 50 from the middle of {count} artefacts, releases-only filter"),
        format!(
            "{} round trip(s) ({}); {examined} documents examined for {} returned; plans {}",
            commands.len(),
            names.join(", "),
            changes.items.len(),
            plans.join("; ")
        ),
        "-".into(),
        "-".into(),
        "reported, not timed",
    );
    db.drop().await.unwrap();
}
