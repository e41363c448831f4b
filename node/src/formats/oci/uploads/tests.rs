use super::*;

fn name() -> OciName {
    OciName::parse("repo/image").expect("name")
}

fn frames(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
    futures::stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p)))
            .collect::<Vec<_>>(),
    )
}

async fn collect(guard: &SessionGuard) -> Vec<u8> {
    let mut stream = Box::pin(guard.spooled().await.expect("spool"));
    let mut out = Vec::new();
    while let Some(frame) = stream.next().await {
        out.extend_from_slice(&frame.expect("frame"));
    }
    out
}

#[tokio::test]
async fn sessions_survive_reopening_with_exactly_the_acknowledged_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uploads = dir.path().join("uploads");
    let store = UploadStore::open(uploads.clone(), Duration::from_secs(60)).expect("open");
    let id = store.create(&name()).await.expect("create");
    {
        let mut guard = store.lock(&id.to_string(), &name()).await.expect("lock");
        assert_eq!(
            guard.append(frames(&[b"hello ", b"world"]), 100).await.ok(),
            Some(11)
        );
    }
    // A crash after writing more bytes than were acknowledged.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(uploads.join(format!("{id}.data")))
            .expect("open");
        file.write_all(b"unacknowledged").expect("write");
    }
    drop(store);
    let store = UploadStore::open(uploads.clone(), Duration::from_secs(60)).expect("reopen");
    let guard = store.lock(&id.to_string(), &name()).await.expect("lock");
    assert_eq!(guard.received(), 11);
    assert_eq!(collect(&guard).await, b"hello world");
    drop(guard);

    // A data file that lost acknowledged bytes loses the session.
    std::fs::OpenOptions::new()
        .write(true)
        .open(uploads.join(format!("{id}.data")))
        .expect("open")
        .set_len(3)
        .expect("truncate");
    drop(store);
    let store = UploadStore::open(uploads.clone(), Duration::from_secs(60)).expect("reopen");
    assert!(matches!(
        store.lock(&id.to_string(), &name()).await,
        Err(OciError::BlobUploadUnknown { .. })
    ));
    assert!(store.is_empty());
    assert_eq!(std::fs::read_dir(&uploads).expect("dir").count(), 0);
}

#[tokio::test]
async fn failed_appends_leave_the_session_where_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = UploadStore::open(dir.path().join("u"), Duration::from_secs(60)).expect("open");
    let id = store.create(&name()).await.expect("create");
    let mut guard = store.lock(&id.to_string(), &name()).await.expect("lock");
    guard.append(frames(&[b"abc"]), 10).await.expect("append");
    let broken = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"def")),
        Err("connection reset".to_string()),
    ]);
    assert!(guard.append(broken, 10).await.is_err());
    assert!(matches!(
        guard.append(frames(&[b"0123456789"]), 10).await,
        Err(OciError::TooLarge { .. })
    ));
    assert_eq!(guard.received(), 3);
    assert_eq!(collect(&guard).await, b"abc");
    let other = OciName::parse("repo/other").expect("name");
    drop(guard);
    assert!(store.lock(&id.to_string(), &other).await.is_err());
    assert!(store.lock("not-a-uuid", &name()).await.is_err());
}

#[tokio::test]
async fn idle_sessions_expire_and_busy_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = UploadStore::open(dir.path().join("u"), Duration::ZERO).expect("open");
    let idle = store.create(&name()).await.expect("create");
    let busy = store.create(&name()).await.expect("create");
    let guard = store.lock(&busy.to_string(), &name()).await.expect("lock");
    assert_eq!(store.expire().await, 1);
    assert!(store.lock(&idle.to_string(), &name()).await.is_err());
    drop(guard);
    assert_eq!(store.expire().await, 1);
    assert!(store.is_empty());
}
