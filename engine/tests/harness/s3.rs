//! A real S3-compatible server for the object-store tests: moto's standalone server
//! (`moto[server]`, installed into .venv by `make setup`), started on a free loopback port
//! and killed when dropped. Its request log (one line per request, with the status) goes to
//! `<logs>/s3.log`.

use super::{free_port, repo_root};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStoreExt, PutPayload};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "shoal-test";
pub const SECRET_KEY: &str = "shoal-test-secret";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl S3Server {
    pub fn start(logs: &Path) -> Self {
        let binary = repo_root().join(".venv/bin/moto_server");
        assert!(
            binary.exists(),
            "{} is missing: run `make setup` (requirements.txt installs moto[server])",
            binary.display()
        );
        let port = free_port();
        let log = logs.join("s3.log");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .expect("s3 log"),
            )
            .spawn()
            .expect("start moto_server");
        let server = Self { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard variables a worker reads its store's endpoint and credentials from,
    /// pointing at `endpoint` (the server, or a proxy in front of it).
    pub fn env_for(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Creates `bucket` (S3's CreateBucket: PUT /bucket).
    pub fn create_bucket(&self, bucket: &str) {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to s3");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send CreateBucket");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "CreateBucket: {reply}");
    }

    pub fn store(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .with_allow_http(true)
            .build()
            .expect("an S3 client")
    }

    /// Uploads every file under `dir` to `bucket` under `prefix`, keeping relative paths.
    pub fn upload_dir(&self, bucket: &str, dir: &Path, prefix: &str) {
        let store = self.store(bucket);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            for path in files_under(dir) {
                let relative = path.strip_prefix(dir).expect("under dir");
                let key = format!("{prefix}/{}", relative.display());
                let bytes = std::fs::read(&path).expect("read a file to upload");
                store
                    .put(&key.as_str().into(), PutPayload::from(bytes))
                    .await
                    .expect("upload");
            }
        });
    }

    /// Every object under `prefix` in `bucket`: its key, size, ETag and modification time.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64, String, String)> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let store = self.store(bucket);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut listed: Vec<_> = runtime
            .block_on(store.list(Some(&prefix.into())).try_collect::<Vec<_>>())
            .expect("list the bucket")
            .into_iter()
            .map(|m| {
                (
                    m.location.to_string(),
                    m.size,
                    m.e_tag.unwrap_or_default(),
                    m.last_modified.to_rfc3339(),
                )
            })
            .collect();
        listed.sort();
        listed
    }

    /// Copies every object under `prefix` in `bucket` into `dir`, keeping relative paths.
    pub fn download_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        let store = self.store(bucket);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        for (key, ..) in self.objects(bucket, prefix) {
            let relative = key
                .strip_prefix(&format!("{prefix}/"))
                .expect("under prefix");
            let bytes = runtime
                .block_on(async { store.get(&key.as_str().into()).await?.bytes().await })
                .expect("download");
            let path = dir.join(relative);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("a folder");
            std::fs::write(path, bytes).expect("write a downloaded file");
        }
    }

    /// Lines of the server's request log that mention `needle`.
    pub fn requests_for(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}
