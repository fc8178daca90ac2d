//! AWS configuration as users of AWS tools expect it: the standard
//! credential chain, `--profile`, `--region`, and `AWS_ENDPOINT_URL`
//! (which the SDK honours by itself, for emulators such as moto).

use crate::Error;

/// `--profile` / `--region`, shared by the commands that talk to AWS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// Named profile of the shared AWS config and credentials files.
    #[arg(long, env = "AWS_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Region [default: the environment's `region`].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

/// The clients one run needs, built once from one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub config: aws_config::SdkConfig,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub s3: aws_sdk_s3::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sts: aws_sdk_sts::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub apigateway: aws_sdk_apigateway::Client,
}

/// The SDK's configuration loader (credentials, region and endpoints from
/// the environment and the AWS config files), on the one HTTPS client: rustls
/// with ring, as the functions.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(pipeline_shared::runtime::https_client())
}

impl Clients {
    /// Loads the configuration: `--region`, else the spec's region.
    pub async fn load(args: &AwsArgs, spec_region: &str) -> Clients {
        let region = args
            .region
            .clone()
            .unwrap_or_else(|| spec_region.to_string());
        let mut loader = config_loader().region(aws_config::Region::new(region));
        if let Some(profile) = &args.profile {
            loader = loader.profile_name(profile);
        }
        let config = loader.load().await;
        // Path-style addressing works with every S3 endpoint, emulators included.
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(std::env::var_os("AWS_ENDPOINT_URL").is_some())
                .build(),
        );
        Clients {
            cloudformation: aws_sdk_cloudformation::Client::new(&config),
            lambda: aws_sdk_lambda::Client::new(&config),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            ecr: aws_sdk_ecr::Client::new(&config),
            apigateway: aws_sdk_apigateway::Client::new(&config),
            s3,
            config,
        }
    }

    pub fn region(&self) -> String {
        self.config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    /// The caller's account, checked against the account the spec names
    /// before anything is changed.
    pub async fn check_account(&self, expected: Option<&str>) -> Result<String, Error> {
        let identity = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| aws_error("cannot tell who the AWS credentials belong to", e))?;
        let account = identity.account().unwrap_or_default().to_string();
        if let Some(expected) = expected
            && expected != account
        {
            return Err(Error::WrongAccount {
                expected: expected.to_string(),
                actual: account,
            });
        }
        Ok(account)
    }
}

/// An AWS call that failed, with the SDK's whole chain of causes.
pub fn aws_error(what: &str, e: impl std::error::Error) -> Error {
    Error::Aws {
        message: format!("{what}: {}", crate::chain::message_chain(&e)),
    }
}

/// The runtime the AWS commands run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Aws {
            message: format!("cannot start the async runtime: {e}"),
        })
}
