//! TLS, SASL and ACLs of the Kafka front door, judged by clients nobody here wrote:
//! confluent-kafka (librdkafka, configured with the settings Milvus's Kafka WAL passes
//! through) and Kafka's own Java tools (`kafka-topics.sh`, the producer perf tool and the
//! console consumer, all with the Java client), and the Java client's transactional
//! producer and `read_committed` consumer, over a SASL_SSL listener with SCRAM, beside a
//! PLAINTEXT listener of the same server.
//!
//! Certificates are made in the test with the `openssl` command (a CA and a server
//! certificate for `localhost`). The clients come from `scripts/compat-tools` and
//! `scripts/kafka-tools` (`WOODPECKER_COMPAT_PYTHON`, `WOODPECKER_COMPAT_JAVA`,
//! `WOODPECKER_COMPAT_KAFKA_TOOLS_CP`); `scripts/test` sets them. A missing one fails the
//! test.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use compat_tests::Server;
use compat_tests::clients::{java_program, kafka_tool, required_env, run};
use serde_json::Value;
use tokio::process::Command;

const ADMIN_PASSWORD: &str = "admin-secret";

/// Runs `cmd` to its end; its stdout, or an error with its output when it failed.
async fn output(what: &str, cmd: Command) -> Result<String> {
    Ok(run(what, cmd).await?.ok()?.to_owned())
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it, in `dir`.
async fn certificates(dir: &Path) -> Result<()> {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        cmd
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    output(
        "openssl (CA)",
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=woodpecker test CA",
        ]),
    )
    .await?;
    output(
        "openssl (server key)",
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]),
    )
    .await?;
    output(
        "openssl (server certificate)",
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]),
    )
    .await?;
    Ok(())
}

/// A port free right now on 127.0.0.1 (the listeners' ports go into the configuration file,
/// which names them before the server starts).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Secured {
    server: Server,
    dir: tempfile::TempDir,
    sasl_ssl: String,
}

impl Secured {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A Java client configuration for SASL_SSL with `mechanism` as `user`.
    fn java_config(&self, user: &str, password: &str, mechanism: &str) -> Result<PathBuf> {
        let module = if mechanism == "PLAIN" {
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        } else {
            "org.apache.kafka.common.security.scram.ScramLoginModule"
        };
        let path = self.path(&format!("{user}-{mechanism}.properties"));
        std::fs::write(
            &path,
            format!(
                "security.protocol=SASL_SSL\nsasl.mechanism={mechanism}\n\
                 sasl.jaas.config={module} required username=\"{user}\" password=\"{password}\";\n\
                 ssl.truststore.type=PEM\nssl.truststore.location={}\n",
                self.path("ca.pem").display()
            ),
        )?;
        Ok(path)
    }
}

/// A server with a PLAINTEXT and a SASL_SSL listener, ACLs on, `admin` a super user with
/// its SCRAM credentials from the command line.
async fn secured_server() -> Result<Secured> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path()).await?;
    let (plain, sasl) = (free_port()?, free_port()?);
    let config = dir.path().join("security.properties");
    std::fs::write(
        &config,
        format!(
            "listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://localhost:{sasl}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n\
             listener.name.sasl_ssl.ssl.certificate.location={}\n\
             listener.name.sasl_ssl.ssl.key.location={}\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             super.users=User:admin\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server-key.pem").display(),
        ),
    )?;
    let password_file = dir.path().join("admin-password");
    std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n"))?;
    let server = Server::start_with(&[
        "--kafka-security-config",
        config.to_str().context("a UTF-8 path")?,
        "--kafka-admin-user",
        "admin",
        "--kafka-admin-password-file",
        password_file.to_str().context("a UTF-8 path")?,
    ])
    .await?;
    Ok(Secured {
        server,
        dir,
        sasl_ssl: format!("localhost:{sasl}"),
    })
}

/// confluent-kafka with Milvus's settings: SCRAM-SHA-512 and SCRAM-SHA-256 and PLAIN over
/// TLS, credentials made through AlterUserScramCredentials, wrong passwords and missing
/// credentials refused, ACLs made, listed, enforced (TOPIC_AUTHORIZATION_FAILED,
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED for a KIP-848 member) and
/// deleted; a transaction committed under ACLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_over_sasl_ssl_with_acls() -> Result<()> {
    let mut s = secured_server().await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let mut cmd = Command::new(required_env("WOODPECKER_COMPAT_PYTHON")?);
    cmd.arg(dir.join("confluent_security.py"))
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["security", &s.sasl_ssl])
        .arg(s.path("ca.pem"))
        .args([ADMIN_PASSWORD, "secured"]);
    let out = output("confluent_security.py", cmd).await?;
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("no RESULT line")?;
    let v: Value = serde_json::from_str(line)?;
    ensure!(
        v["failures"].as_array().is_some_and(|f| f.is_empty()),
        "{v}"
    );
    // TOPIC_AUTHORIZATION_FAILED (29) for a produce without WRITE.
    ensure!(v["denied_produce"] == serde_json::json!(["29"]), "{v}");
    ensure!(
        v["consumed"] == serde_json::json!(["a1", "a2", "a3"]),
        "{v}"
    );
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53) before the ACL, a commit after it.
    ensure!(v["txn_denied"] == "53", "{v}");
    ensure!(v["txn_committed"] == true, "{v}");
    // KIP-848: READ on the group for ConsumerGroupHeartbeat.
    ensure!(
        v["kip848_denied"] == serde_json::json!(["GROUP_AUTHORIZATION_FAILED"]),
        "{v}"
    );
    ensure!(
        v["kip848_consumed"] == serde_json::json!(["a1", "a2", "a3"]),
        "{v}"
    );
    s.server.stop().await
}

/// kafka-python (its own protocol code) over SASL_SSL: SCRAM-SHA-256, SCRAM-SHA-512 and
/// PLAIN each produce and read back, a wrong password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_over_sasl_ssl_plain_and_scram() -> Result<()> {
    let mut s = secured_server().await?;
    let admin = s.java_config("admin", ADMIN_PASSWORD, "SCRAM-SHA-256")?;
    let mut create = kafka_tool("org.apache.kafka.tools.TopicCommand")?;
    create
        .args(["--bootstrap-server", &s.sasl_ssl, "--command-config"])
        .arg(&admin)
        .args(["--create", "--topic", "kp-sasl", "--partitions", "1"]);
    output("kafka-topics.sh --create", create).await?;
    let mut cmd = compat_tests::clients::python("kafka_python_security.py")?;
    cmd.args(["sasl", &s.sasl_ssl])
        .arg(s.path("ca.pem"))
        .args([ADMIN_PASSWORD, "kp-sasl"]);
    let v = compat_tests::clients::run("kafka_python_security.py", cmd)
        .await?
        .summary()?;
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        ensure!(v["roundtrips"][mechanism] == 3, "{mechanism}: {v}");
    }
    ensure!(v["wrong_password"].is_string(), "{v}");
    s.server.stop().await
}

/// A client certificate for `CN=client`, signed by the CA of [`certificates`], in `dir`:
/// `client.pem`, `client-key.pem` (PKCS#8) and `client-keystore.pem` (both, for the Java
/// client's PEM keystore).
async fn client_certificate(dir: &Path) -> Result<()> {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        cmd
    };
    std::fs::write(
        dir.join("client-ext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )?;
    output(
        "openssl (client key)",
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client-key.pem",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ]),
    )
    .await?;
    output(
        "openssl (client certificate)",
        openssl(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client-ext.cnf",
        ]),
    )
    .await?;
    let keystore = std::fs::read_to_string(dir.join("client-key.pem"))?
        + &std::fs::read_to_string(dir.join("client.pem"))?;
    std::fs::write(dir.join("client-keystore.pem"), keystore)?;
    Ok(())
}

/// Client certificates (`ssl.client.auth=required`) with two real clients: an SSL listener
/// whose ACLs make the certificate's principal, `User:CN=client`, the super user.
/// confluent-kafka creates a topic, produces and consumes with the certificate and is refused
/// without one; the Java client (`kafka-topics.sh`) creates and lists with its PEM keystore
/// and fails without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_confluent_kafka_and_java() -> Result<()> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path()).await?;
    client_certificate(dir.path()).await?;
    let (plain, ssl) = (free_port()?, free_port()?);
    let config = dir.path().join("security.properties");
    std::fs::write(
        &config,
        format!(
            "listeners=PLAINTEXT://127.0.0.1:{plain},SSL://localhost:{ssl}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL\n\
             listener.name.ssl.ssl.certificate.location={}\n\
             listener.name.ssl.ssl.key.location={}\n\
             listener.name.ssl.ssl.truststore.location={}\n\
             listener.name.ssl.ssl.client.auth=required\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             super.users=User:CN=client\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server-key.pem").display(),
            dir.path().join("ca.pem").display(),
        ),
    )?;
    let mut server = Server::start_with(&[
        "--kafka-security-config",
        config.to_str().context("a UTF-8 path")?,
    ])
    .await?;
    let bootstrap = format!("localhost:{ssl}");
    let path = |name: &str| dir.path().join(name);

    let mut cmd = compat_tests::clients::python("confluent_security.py")?;
    cmd.args(["mtls", &bootstrap])
        .arg(path("ca.pem"))
        .arg(path("client.pem"))
        .arg(path("client-key.pem"))
        .arg("mtls-ck");
    let v = compat_tests::clients::run("confluent_security.py mtls", cmd)
        .await?
        .summary()?;
    ensure!(v["refused_without_certificate"] == true, "{v}");

    let with_cert = path("client-ssl.properties");
    std::fs::write(
        &with_cert,
        format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n\
             ssl.keystore.type=PEM\nssl.keystore.location={}\n",
            path("ca.pem").display(),
            path("client-keystore.pem").display()
        ),
    )?;
    let without_cert = path("no-cert-ssl.properties");
    std::fs::write(
        &without_cert,
        format!(
            "security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            path("ca.pem").display()
        ),
    )?;
    let topics = |config: &Path, args: &[&str]| -> Result<Command> {
        let mut cmd = kafka_tool("org.apache.kafka.tools.TopicCommand")?;
        cmd.args(["--bootstrap-server", &bootstrap, "--command-config"])
            .arg(config)
            .args(args);
        Ok(cmd)
    };
    output(
        "kafka-topics.sh --create with a client certificate",
        topics(
            &with_cert,
            &["--create", "--topic", "mtls-java", "--partitions", "1"],
        )?,
    )
    .await?;
    let listed = output(
        "kafka-topics.sh --list with a client certificate",
        topics(&with_cert, &["--list"])?,
    )
    .await?;
    ensure!(
        listed.lines().any(|l| l.trim() == "mtls-java")
            && listed.lines().any(|l| l.trim() == "mtls-ck"),
        "{listed}"
    );
    // Without a certificate the TLS handshake fails (SslAuthenticationException).
    let out = failure(
        "kafka-topics.sh --list without a client certificate",
        topics(&without_cert, &["--list"])?,
    )
    .await?;
    ensure!(out.contains("SslAuthenticationException"), "{out}");
    server.stop().await
}

/// Kafka's Java tools over SASL_SSL with SCRAM-SHA-256: `kafka-topics.sh` creates and lists,
/// the producer perf tool writes and the console consumer reads back; a wrong password
/// fails the tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_java_tools_over_sasl_ssl_scram() -> Result<()> {
    let mut s = secured_server().await?;
    let admin = s.java_config("admin", ADMIN_PASSWORD, "SCRAM-SHA-256")?;
    let topics = |args: &[&str]| -> Result<Command> {
        let mut cmd = kafka_tool("org.apache.kafka.tools.TopicCommand")?;
        cmd.args(["--bootstrap-server", &s.sasl_ssl, "--command-config"])
            .arg(&admin)
            .args(args);
        Ok(cmd)
    };
    output(
        "kafka-topics.sh --create",
        topics(&["--create", "--topic", "tools", "--partitions", "2"])?,
    )
    .await?;
    let listed = output("kafka-topics.sh --list", topics(&["--list"])?).await?;
    ensure!(listed.lines().any(|l| l.trim() == "tools"), "{listed}");

    let n = 200;
    let mut produce = kafka_tool("org.apache.kafka.tools.ProducerPerformance")?;
    produce
        .args(["--topic", "tools", "--num-records", &n.to_string()])
        .args([
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--producer.config",
        ])
        .arg(&admin)
        .args([
            "--producer-props",
            &format!("bootstrap.servers={}", s.sasl_ssl),
        ])
        .arg("acks=all");
    output("kafka-producer-perf-test.sh", produce).await?;

    let mut consume = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer")?;
    consume
        .args(["--bootstrap-server", &s.sasl_ssl, "--topic", "tools"])
        .args(["--from-beginning", "--max-messages", &n.to_string()])
        .args(["--timeout-ms", "60000", "--consumer.config"])
        .arg(&admin);
    let consumed = output("kafka-console-consumer.sh", consume).await?;
    ensure!(
        consumed.lines().count() == n,
        "the console consumer read {} records, not {n}",
        consumed.lines().count()
    );

    // A wrong password: the tool fails (Kafka's SaslAuthenticationException).
    let wrong = s.java_config("admin", "wrong", "SCRAM-SHA-256")?;
    let mut cmd = kafka_tool("org.apache.kafka.tools.TopicCommand")?;
    cmd.args(["--bootstrap-server", &s.sasl_ssl, "--command-config"])
        .arg(&wrong)
        .arg("--list");
    let text = failure("kafka-topics.sh with a wrong password", cmd).await?;
    ensure!(
        text.contains("SaslAuthenticationException"),
        "kafka-topics.sh with a wrong password: {text}"
    );

    s.server.stop().await
}

/// Runs `cmd` to its end expecting it to fail; its output (stdout and stderr together).
async fn failure(what: &str, cmd: Command) -> Result<String> {
    run(what, cmd).await?.failed()
}

/// `kafka-configs.sh` and `kafka-acls.sh` (Kafka's core jar) over SASL_SSL with SCRAM: the
/// admin makes a SCRAM user with kafka-configs.sh, who then logs in; that user may not grow
/// a topic or alter its configuration until kafka-acls.sh grants ALTER and ALTER_CONFIGS, and
/// may not grow it again once ALTER is removed; the ACLs are listed in between. Then
/// `kafka-transactions.sh describe-producers` needs READ on the topic (DESCRIBE is not enough).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acls_and_configs_tools_over_sasl_ssl_scram() -> Result<()> {
    let mut s = secured_server().await?;
    let admin = s.java_config("admin", ADMIN_PASSWORD, "SCRAM-SHA-256")?;
    let alice = s.java_config("alice", "alice-secret", "SCRAM-SHA-256")?;
    let tool = |class: &str, config: &Path, args: &[&str]| -> Result<Command> {
        let mut cmd = kafka_tool(class)?;
        cmd.args(["--bootstrap-server", &s.sasl_ssl, "--command-config"])
            .arg(config)
            .args(args);
        Ok(cmd)
    };
    let configs = "kafka.admin.ConfigCommand";
    let acls = "kafka.admin.AclCommand";
    let topics = "org.apache.kafka.tools.TopicCommand";

    // A SCRAM user made with kafka-configs.sh (AlterUserScramCredentials), then described.
    let user = ["--entity-type", "users", "--entity-name", "alice"];
    let mut args = user.to_vec();
    args.extend([
        "--alter",
        "--add-config",
        "SCRAM-SHA-256=[iterations=8192,password=alice-secret]",
    ]);
    output(
        "kafka-configs.sh --alter users",
        tool(configs, &admin, &args)?,
    )
    .await?;
    // `--describe` of users asks for client quotas (DescribeClientQuotas) and SCRAM
    // credentials (DescribeUserScramCredentials) together.
    let mut args = user.to_vec();
    args.push("--describe");
    let out = output(
        "kafka-configs.sh --describe users",
        tool(configs, &admin, &args)?,
    )
    .await?;
    ensure!(
        out.contains(
            "SCRAM credential configs for user-principal 'alice' are SCRAM-SHA-256=iterations=8192"
        ),
        "{out}"
    );

    output(
        "kafka-topics.sh --create",
        tool(
            topics,
            &admin,
            &["--create", "--topic", "acl-t", "--partitions", "1"],
        )?,
    )
    .await?;
    let grow = |n: &'static str| {
        tool(
            topics,
            &alice,
            &["--alter", "--topic", "acl-t", "--partitions", n],
        )
    };
    let topic_config = [
        "--entity-type",
        "topics",
        "--entity-name",
        "acl-t",
        "--alter",
        "--add-config",
        "retention.ms=1000000",
    ];
    // alice authenticates (she can list) but may not alter the topic yet.
    output(
        "kafka-topics.sh --list as alice",
        tool(topics, &alice, &["--list"])?,
    )
    .await?;
    failure("kafka-topics.sh --alter as alice, no ACL", grow("2")?).await?;
    // Client quotas need ALTER_CONFIGS / DESCRIBE_CONFIGS on the cluster.
    let quota = [
        "--entity-type",
        "users",
        "--entity-name",
        "alice",
        "--alter",
        "--add-config",
        "producer_byte_rate=1048576",
    ];
    let out = failure(
        "kafka-configs.sh --alter quotas as alice",
        tool(configs, &alice, &quota)?,
    )
    .await?;
    ensure!(out.contains("ClusterAuthorizationException"), "{out}");
    let out = failure(
        "kafka-configs.sh --describe users as alice",
        tool(configs, &alice, &["--entity-type", "users", "--describe"])?,
    )
    .await?;
    ensure!(out.contains("ClusterAuthorizationException"), "{out}");
    output(
        "kafka-configs.sh --alter quotas as admin",
        tool(configs, &admin, &quota)?,
    )
    .await?;
    let out = failure(
        "kafka-configs.sh --alter as alice, no ACL",
        tool(configs, &alice, &topic_config)?,
    )
    .await?;
    ensure!(out.contains("TopicAuthorizationException"), "{out}");

    let grant = [
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Alter",
        "--operation",
        "AlterConfigs",
        "--topic",
        "acl-t",
    ];
    output("kafka-acls.sh --add", tool(acls, &admin, &grant)?).await?;
    let out = output(
        "kafka-acls.sh --list",
        tool(acls, &admin, &["--list", "--topic", "acl-t"])?,
    )
    .await?;
    ensure!(
        out.contains("User:alice") && out.contains("ALTER") && out.contains("ALTER_CONFIGS"),
        "{out}"
    );
    output("kafka-topics.sh --alter as alice", grow("2")?).await?;
    output(
        "kafka-configs.sh --alter as alice",
        tool(configs, &alice, &topic_config)?,
    )
    .await?;

    let revoke = [
        "--remove",
        "--force",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Alter",
        "--topic",
        "acl-t",
    ];
    output("kafka-acls.sh --remove", tool(acls, &admin, &revoke)?).await?;
    failure("kafka-topics.sh --alter as alice, ACL removed", grow("3")?).await?;
    let out = output(
        "kafka-topics.sh --describe",
        tool(topics, &admin, &["--describe", "--topic", "acl-t"])?,
    )
    .await?;
    ensure!(out.contains("PartitionCount: 2"), "{out}");
    let out = output(
        "kafka-configs.sh --describe",
        tool(
            configs,
            &admin,
            &[
                "--entity-type",
                "topics",
                "--entity-name",
                "acl-t",
                "--describe",
            ],
        )?,
    )
    .await?;
    ensure!(out.contains("retention.ms=1000000"), "{out}");

    // DescribeProducers needs READ on the topic: alice, who may DESCRIBE it (so that the
    // tool finds its leader) but not READ it, is refused by the broker.
    let describe_only = [
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Describe",
        "--topic",
        "acl-t",
    ];
    output(
        "kafka-acls.sh --add Describe",
        tool(acls, &admin, &describe_only)?,
    )
    .await?;
    let txns = "org.apache.kafka.tools.TransactionsCommand";
    let producers = ["describe-producers", "--topic", "acl-t", "--partition", "0"];
    output(
        "kafka-transactions.sh describe-producers as admin",
        tool(txns, &admin, &producers)?,
    )
    .await?;
    let out = failure(
        "kafka-transactions.sh describe-producers as alice",
        tool(txns, &alice, &producers)?,
    )
    .await?;
    ensure!(
        out.contains("TopicAuthorizationException") && !out.contains("in `Metadata` response"),
        "{out}"
    );
    s.server.stop().await
}

/// The Java client's transactional producer and `read_committed` consumer, unchanged, over
/// TLS + SCRAM-SHA-512 (the client programs of `transactions.rs`, `TxnClients.java`, with the
/// client settings of a properties file): committed and aborted transactions,
/// `sendOffsetsToTransaction` and zombie fencing, as the admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_transactions_over_sasl_ssl_scram() -> Result<()> {
    let mut s = secured_server().await?;
    let admin = s.java_config("admin", ADMIN_PASSWORD, "SCRAM-SHA-512")?;
    let classpath = required_env("WOODPECKER_COMPAT_JAVA_CP")?;
    let main = "woodpecker/compat/TxnClients.java";
    let source = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("clients/java/src/main/java")
            .join(main),
    )?;
    let compiled = classpath
        .split(':')
        .map(|entry| Path::new(entry).join(main))
        .find(|p| p.is_file())
        .context("WOODPECKER_COMPAT_JAVA_CP has no compiled TxnClients: run scripts/compat-tools install")?;
    ensure!(
        std::fs::read(&compiled)? == source,
        "the compiled Java clients were not built from the current {main}: run scripts/compat-tools install"
    );
    let n = 200;
    let mut cmd = Command::new(required_env("WOODPECKER_COMPAT_JAVA")?);
    cmd.arg("-cp")
        .arg(classpath)
        .arg("woodpecker.compat.TxnClients")
        .args(["txn", &s.sasl_ssl, "st-in", "st-out", "st-group"])
        .arg(n.to_string())
        .env("WOODPECKER_COMPAT_CLIENT_PROPERTIES", &admin);
    let out = output("java txn over SASL_SSL", cmd).await?;
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("no RESULT line")?;
    let v: Value = serde_json::from_str(line)?;
    ensure!(
        v["failures"].as_array().is_some_and(|f| f.is_empty()),
        "{v}"
    );
    // Every fourth transaction of ten records was aborted.
    ensure!(
        v["committed_written"] == 150 && v["aborted_written"] == 50,
        "{v}"
    );
    ensure!(v["read_committed"] == 150, "{v}");
    ensure!(v["read_uncommitted"] == n, "{v}");
    ensure!(v["out_read_committed"] == 150, "{v}");
    ensure!(v["fenced"] == "ProducerFencedException", "{v}");
    s.server.stop().await
}

/// Authorized operations as the Java Admin client asks for them under ACLs
/// (`describeTopics(..., includeAuthorizedOperations(true))`, which falls back to Metadata
/// here, and `describeCluster(includeAuthorizedOperations(true))`, DescribeCluster), over
/// SASL_SSL with SCRAM: the super user gets every operation; alice, with READ on the topic
/// only, gets READ and DESCRIBE (READ implies it) on the topic and none on the cluster
/// (DescribeCluster reports no operations to a principal that may not DESCRIBE it); after
/// kafka-acls.sh grants her DESCRIBE and IDEMPOTENT_WRITE on the cluster, those two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_admin_authorized_operations_under_acls() -> Result<()> {
    let mut s = secured_server().await?;
    let admin = s.java_config("admin", ADMIN_PASSWORD, "SCRAM-SHA-256")?;
    let alice = s.java_config("alice", "alice-secret", "SCRAM-SHA-256")?;
    let tool = |class: &str, args: &[&str]| -> Result<Command> {
        let mut cmd = kafka_tool(class)?;
        cmd.args(["--bootstrap-server", &s.sasl_ssl, "--command-config"])
            .arg(&admin)
            .args(args);
        Ok(cmd)
    };
    let acls = "kafka.admin.AclCommand";
    output(
        "kafka-configs.sh --alter users",
        tool(
            "kafka.admin.ConfigCommand",
            &[
                "--entity-type",
                "users",
                "--entity-name",
                "alice",
                "--alter",
                "--add-config",
                "SCRAM-SHA-256=[iterations=8192,password=alice-secret]",
            ],
        )?,
    )
    .await?;
    output(
        "kafka-topics.sh --create",
        tool(
            "org.apache.kafka.tools.TopicCommand",
            &["--create", "--topic", "ops-t", "--partitions", "1"],
        )?,
    )
    .await?;
    let operations = |config: &Path| -> Result<Command> {
        let mut cmd = java_program(
            "woodpecker/compat/BrokerChecks.java",
            "woodpecker.compat.BrokerChecks",
        )?;
        cmd.args(["authorized", &s.sasl_ssl])
            .arg(config)
            .arg("ops-t");
        Ok(cmd)
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };

    let v = run("BrokerChecks authorized as admin", operations(&admin)?)
        .await?
        .summary()?;
    ensure!(
        names(&v["topic_operations"])
            == [
                "ALTER",
                "ALTER_CONFIGS",
                "CREATE",
                "DELETE",
                "DESCRIBE",
                "DESCRIBE_CONFIGS",
                "READ",
                "WRITE"
            ],
        "{v}"
    );
    let cluster = names(&v["cluster_operations"]);
    for op in [
        "ALTER",
        "ALTER_CONFIGS",
        "CLUSTER_ACTION",
        "CREATE",
        "DESCRIBE",
        "DESCRIBE_CONFIGS",
        "IDEMPOTENT_WRITE",
    ] {
        ensure!(cluster.iter().any(|c| c == op), "{op} missing: {v}");
    }

    let read = [
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "ops-t",
    ];
    output("kafka-acls.sh --add Read", tool(acls, &read)?).await?;
    let v = run("BrokerChecks authorized as alice", operations(&alice)?)
        .await?
        .summary()?;
    ensure!(names(&v["topic_operations"]) == ["DESCRIBE", "READ"], "{v}");
    ensure!(v["cluster_operations"] == serde_json::json!([]), "{v}");

    let cluster_grant = [
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Describe",
        "--operation",
        "IdempotentWrite",
        "--cluster",
    ];
    output("kafka-acls.sh --add --cluster", tool(acls, &cluster_grant)?).await?;
    let v = run(
        "BrokerChecks authorized as alice, cluster ACLs",
        operations(&alice)?,
    )
    .await?
    .summary()?;
    ensure!(names(&v["topic_operations"]) == ["DESCRIBE", "READ"], "{v}");
    ensure!(
        names(&v["cluster_operations"]) == ["DESCRIBE", "IDEMPOTENT_WRITE"],
        "{v}"
    );
    s.server.stop().await
}
