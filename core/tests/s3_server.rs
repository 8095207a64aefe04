//! The test S3 server (scripts/test-s3) does what the artifact store asks of
//! S3 through object_store's AmazonS3: SigV4, multipart upload, ranged GET,
//! list, delete, and refusing a wrong secret. Needs MAELAB_TEST_S3.

use bytes::Bytes;
use futures::TryStreamExt;
use maelab_core::s3_testing::{self, S3TestError, TestS3};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Deterministic bytes that differ at every offset a range could start at.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

#[tokio::test]
async fn put_multipart_range_list_delete_round_trip() {
    let bucket = s3_testing::fresh_bucket().await.expect("fresh bucket");
    let store = bucket.store().expect("client");
    assert!(
        bucket
            .url()
            .starts_with(&format!("s3://{}/", bucket.name()))
    );
    let listed: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert!(listed.is_empty(), "a fresh bucket holds {listed:?}");

    let small = Path::from("maelab/runs/1/log.txt");
    store
        .put(&small, PutPayload::from_static(b"epoch 1\n"))
        .await
        .expect("put");

    // 11 MiB in three parts: S3's 5 MiB minimum for all but the last part.
    let big = Path::from("maelab/runs/1/checkpoint-0001.pt");
    let data = pattern(11 << 20, 7);
    let mut upload = store.put_multipart(&big).await.expect("create upload");
    for part in data.chunks(5 << 20) {
        upload
            .put_part(PutPayload::from(Bytes::copy_from_slice(part)))
            .await
            .expect("upload part");
    }
    upload.complete().await.expect("complete upload");

    let meta = store.head(&big).await.expect("head");
    assert_eq!(meta.size, data.len() as u64);
    let whole = store
        .get(&big)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(
        whole == data,
        "the multipart object differs from what was sent"
    );

    // A range across the first part boundary, and the object's last byte.
    let across = (5 << 20) - 100..(5 << 20) + 100;
    let got = store.get_range(&big, across.clone()).await.expect("range");
    assert_eq!(&got[..], &data[across.start as usize..across.end as usize]);
    let last = data.len() as u64 - 1..data.len() as u64;
    let got = store.get_range(&big, last).await.expect("last byte");
    assert_eq!(&got[..], &data[data.len() - 1..]);

    let mut keys: Vec<String> = store
        .list(Some(&Path::from("maelab/runs/1")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list prefix");
    keys.sort();
    assert_eq!(keys, [big.to_string(), small.to_string()]);
    let other: Vec<_> = store
        .list(Some(&Path::from("maelab/runs/2")))
        .try_collect()
        .await
        .expect("list other prefix");
    assert!(other.is_empty());

    store.delete(&big).await.expect("delete");
    match store.head(&big).await {
        Err(object_store::Error::NotFound { .. }) => {}
        other => panic!("a deleted object answers {other:?}"),
    }
    let keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list after delete");
    assert_eq!(keys, [small.to_string()]);
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let bucket = s3_testing::fresh_bucket().await.expect("fresh bucket");
    let key = Path::from("maelab/secret.txt");
    bucket
        .store()
        .expect("client")
        .put(&key, PutPayload::from_static(b"kept"))
        .await
        .expect("put with the right secret");

    let wrong = bucket.store_with_secret("not-the-secret").expect("client");
    let put = wrong.put(&key, PutPayload::from_static(b"lost")).await;
    assert!(
        matches!(put, Err(object_store::Error::PermissionDenied { .. })),
        "a put signed with a wrong secret answers {put:?}"
    );
    let get = wrong.get(&key).await.map(|_| ());
    assert!(
        matches!(get, Err(object_store::Error::PermissionDenied { .. })),
        "a get signed with a wrong secret answers {get:?}"
    );
    let kept = bucket
        .store()
        .expect("client")
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&kept[..], b"kept");
}

#[tokio::test]
async fn a_wrong_secret_cannot_create_a_bucket() {
    let good = TestS3::from_env().expect("MAELAB_TEST_S3");
    let wrong = TestS3 {
        secret_access_key: "not-the-secret".into(),
        ..good
    };
    match wrong.fresh_bucket().await {
        Err(S3TestError::CreateBucket { reason, .. }) => {
            assert!(
                reason.contains("403"),
                "refused for another reason: {reason}"
            )
        }
        other => panic!("CreateBucket with a wrong secret answers {other:?}"),
    }
}
