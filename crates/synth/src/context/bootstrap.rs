//! The bootstrap stack: the environment's assets bucket, image repository and API Gateway's logging role.

use super::*;

#[derive(Debug, Serialize)]
pub struct BootstrapContext {
    pub common: Common,
    pub bucket_skips: Vec<Skip>,
    /// ECR lifecycle rules, as the JSON text ECR takes.
    pub lifecycle_policy: String,
    /// Deletion policy of the bucket, role and repository, which outlive the
    /// stack but not a rolled-back first create of it ([`KEEP`]).
    pub keep: &'static str,
}

/// Images of each function the ECR repository keeps.
const KEPT_IMAGES: u32 = 30;

/// The bootstrap stack: where the deploy puts function packages (and
/// templates too large to pass inline) and function images.
pub fn bootstrap(env: &str, spec: &Spec) -> BootstrapContext {
    // Deploys tag each function's images `<function>-<digest>`; the newest
    // ones stay, so that recent versions can still take traffic back.
    let mut rules = vec![serde_json::json!({
        "rulePriority": 1,
        "description": "Keep the 50 newest untagged images",
        "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 50},
        "action": {"type": "expire"}
    })];
    for (i, (name, _)) in spec.functions.all().iter().enumerate() {
        rules.push(serde_json::json!({
            "rulePriority": i + 2,
            "description": format!("Keep the {KEPT_IMAGES} newest images of the {name} function"),
            "selection": {"tagStatus": "tagged", "tagPrefixList": [format!("{name}-")], "countType": "imageCountMoreThan", "countNumber": KEPT_IMAGES},
            "action": {"type": "expire"}
        }));
    }
    let lifecycle = serde_json::json!({ "rules": rules });
    BootstrapContext {
        common: Common::new(
            env,
            spec,
            "bootstrap",
            "assets bucket and image repository of the deploy",
        ),
        bucket_skips: vec![skip(
            "CKV_AWS_18",
            "holds only build outputs named by their SHA-256, written by the deploy; CloudTrail records who wrote them",
        )],
        lifecycle_policy: lifecycle.to_string(),
        keep: KEEP,
    }
}
