//! The data stack: key, buckets, queues, the database and its replicas and proxy.

use super::*;

#[derive(Debug, Serialize)]
pub struct DataContext {
    pub common: Common,
    pub params: Vec<Param>,
    pub key_pending_days: u32,
    pub raw: RawContext,
    pub queue: QueueContext,
    pub db: DbContext,
    pub replicas: Vec<Replica>,
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RawContext {
    pub retention_days: u32,
    pub versioning: bool,
    pub skips: Vec<Skip>,
    pub log_skips: Vec<Skip>,
    pub log_retention_days: u32,
}

#[derive(Debug, Serialize)]
pub struct QueueContext {
    pub visibility_timeout: u32,
    pub max_receives: u32,
    pub dead_letter_retention_seconds: u32,
}

#[derive(Debug, Serialize)]
pub struct DbContext {
    pub engine_version: String,
    pub family: String,
    pub instance_class: String,
    pub storage_gb: u32,
    pub max_storage_gb: Option<u32>,
    pub multi_az: bool,
    pub backup_retention_days: u8,
    /// The spec's `database.deletion_protection`, except on a first create.
    pub deletion_protection: bool,
    pub proxy: bool,
    pub performance_insights: bool,
    pub monitoring_interval: u8,
    pub name: String,
    pub policy: &'static str,
    pub skips: Vec<Skip>,
}

#[derive(Debug, Serialize)]
pub struct Replica {
    pub logical_id: String,
    pub skips: Vec<Skip>,
}

/// The database skips that follow from a scaled-down spec, or from a first
/// create (`protected` false while the spec protects the database).
fn db_skips(spec: &Spec, replica: bool, protected: bool) -> Vec<Skip> {
    let db = &spec.database;
    let mut skips = Vec::new();
    if replica {
        skips.push(skip("CKV_AWS_16", "read replica: it is always encrypted with the primary's KMS key, and RDS refuses StorageEncrypted and KmsKeyId on a same-region replica"));
        skips.push(skip("CKV_AWS_157", "read replica: it serves reads and is rebuilt from the primary, whose availability `database.multi_az` sets"));
    } else if !db.multi_az {
        skips.push(skip(
            "CKV_AWS_157",
            "scaled-down environment: `database.multi_az` is false in the spec",
        ));
    }
    if !db.deletion_protection {
        skips.push(skip("CKV_AWS_293", "scaled-down environment: `database.deletion_protection` is false so that it can be torn down"));
    } else if !protected {
        skips.push(skip("CKV_AWS_293", "first create of the stack: a rollback must be able to delete the instance; the deploy turns protection on with an update right after the create"));
    }
    if db.enhanced_monitoring_seconds == 0 {
        skips.push(skip(
            "CKV_AWS_118",
            "scaled-down environment: `database.enhanced_monitoring_seconds` is 0 in the spec",
        ));
    }
    if !db.performance_insights {
        skips.push(skip(
            "CKV_AWS_353",
            "scaled-down environment: `database.performance_insights` is false in the spec",
        ));
    }
    skips
}

/// The data stack. With `first_create` (the deploy creates the stack now),
/// the database instances are rendered without deletion protection: a
/// protected instance can't be deleted, so the rollback of a failed create
/// would end in ROLLBACK_FAILED and the stack could not be created again.
/// The deploy renders the stack again without `first_create` and updates it
/// at once after the create succeeds, which turns protection on in place, so
/// a database that holds data is protected from its first update on
/// (CloudFormation Template Reference: AWS::RDS::DBInstance,
/// DeletionProtection: "can't be deleted when deletion protection is
/// enabled"; update requires no interruption).
pub fn data(env: &str, spec: &Spec, first_create: bool) -> DataContext {
    let db = &spec.database;
    let protected = db.deletion_protection && !first_create;
    let mut params = vec![
        list_from_output("SubnetIds", "network", "Private subnets of the database"),
        from_output(
            "DatabaseSecurityGroupId",
            "network",
            "Security group of the database",
        ),
    ];
    if db.proxy {
        params.push(from_output(
            "ProxySecurityGroupId",
            "network",
            "Security group of the RDS Proxy",
        ));
    }
    let mut raw_skips = Vec::new();
    if !spec.storage.raw.versioning {
        raw_skips.push(skip("CKV_AWS_21", "`storage.raw.versioning` is false in the spec: raw batches are written once and never overwritten"));
    }
    let prod_like = spec.prod_like();
    DataContext {
        common: Common::new(
            env,
            spec,
            "data",
            "KMS key, raw bucket, queues, database; stateful",
        ),
        params,
        key_pending_days: if prod_like { 30 } else { 7 },
        raw: RawContext {
            retention_days: spec.storage.raw.retention_days,
            versioning: spec.storage.raw.versioning,
            skips: raw_skips,
            log_skips: vec![
                skip(
                    "CKV_AWS_18",
                    "this bucket is the access-log target; logging it into itself would loop",
                ),
                skip(
                    "CKV_AWS_145",
                    "S3 server access logging delivers only to buckets encrypted with SSE-S3",
                ),
            ],
            log_retention_days: if prod_like { 365 } else { 90 },
        },
        queue: QueueContext {
            visibility_timeout: spec.queue.visibility_timeout_seconds,
            max_receives: spec.queue.max_receives,
            dead_letter_retention_seconds: spec.queue.dead_letter_retention_days * 86_400,
        },
        db: DbContext {
            engine_version: db.engine_version.clone(),
            family: format!("postgres{}", db.major_version()),
            instance_class: db.instance_class.clone(),
            storage_gb: db.storage_gb,
            max_storage_gb: db.max_storage_gb,
            multi_az: db.multi_az,
            backup_retention_days: db.backup_retention_days,
            deletion_protection: protected,
            proxy: db.proxy,
            performance_insights: db.performance_insights,
            monitoring_interval: db.enhanced_monitoring_seconds,
            name: db.name.clone(),
            policy: if prod_like { "Snapshot" } else { "Delete" },
            skips: db_skips(spec, false, protected),
        },
        replicas: (1..=db.read_replicas)
            .map(|i| Replica {
                logical_id: format!("Replica{i}"),
                skips: db_skips(spec, true, protected),
            })
            .collect(),
        cors_origins: spec.api.cors_origins.clone(),
    }
}
