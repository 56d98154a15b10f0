//! An S3-compatible bucket for finished recordings (`[recording] storage =
//! "s3"`): the writer still writes to `recordings_dir`, and each finished
//! file is uploaded (multipart past a few MB) and then removed locally.
//! Reads and deletes go to the bucket by the row's object name.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt as _;

use crate::config::RecordingConfig;

pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Bucket {
    /// The bucket `[recording]` names; credentials from the environment.
    pub(crate) fn from_config(c: &RecordingConfig) -> anyhow::Result<Bucket> {
        let bucket = c
            .s3_bucket
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("[recording] s3_bucket is not set"))?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&c.s3_region);
        if let Some(endpoint) = &c.s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // Path-style (endpoint/bucket/key): what S3-compatible
                // servers answer to.
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("[recording] s3 bucket {bucket:?}: {e}"))?;
        Ok(Bucket {
            store: Arc::new(store),
            prefix: c.s3_prefix.clone(),
        })
    }

    /// The object a recording's file becomes.
    pub(crate) fn key(&self, file_name: &str) -> String {
        format!("{}{file_name}", self.prefix)
    }

    /// Upload `file` as `key`, in parts, reading it a piece at a time.
    pub(crate) async fn upload(&self, file: &std::path::Path, key: &str) -> Result<(), String> {
        use tokio::io::AsyncReadExt as _;
        let mut from = tokio::fs::File::open(file)
            .await
            .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
        let mut to = BufWriter::new(self.store.clone(), ObjectPath::from(key));
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = from.read(&mut buf).await.map_err(|e| e.to_string())?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            if let Err(e) = to.write_all(chunk).await {
                let _ = to.abort().await;
                return Err(format!("upload: {e}"));
            }
        }
        to.shutdown().await.map_err(|e| format!("upload: {e}"))
    }

    pub(crate) async fn size(&self, key: &str) -> Result<u64, String> {
        let meta = self
            .store
            .head(&ObjectPath::from(key))
            .await
            .map_err(|e| e.to_string())?;
        Ok(meta.size)
    }

    /// Bytes `start..=end` of `key`.
    pub(crate) async fn range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>, String> {
        let bytes = self
            .store
            .get_range(&ObjectPath::from(key), start..end.saturating_add(1))
            .await
            .map_err(|e| e.to_string())?;
        Ok(bytes.to_vec())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), String> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
