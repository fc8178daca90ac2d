"""moto_server (moto 5.2.5) with the fixes our templates need to deploy through change sets.

Same CLI as moto_server: python tests/moto/server.py -H 127.0.0.1 -p PORT
Each patch closes one gap between moto and CloudFormation; nothing else is changed.
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import string
import sys

import openapi_spec_validator
import openapi_spec_validator.validation.exceptions
from moto.apigateway.exceptions import BadRequestException
from moto.apigateway.models import APIGatewayBackend, RestAPI, apigateway_backends
from moto.awslambda.exceptions import UnknownFunctionException
from moto.awslambda.models import LambdaBackend, LambdaFunction, lambda_backends
from moto.awslambda_simple.models import lambda_simple_backends
from moto.cloudformation import parsing as cfn_parsing
from moto.cognitoidp.models import cognitoidp_backends
from moto.cloudformation.models import CloudFormationBackend, Event
from moto.core.common_models import CloudFormationModel
from moto.ec2.models import ec2_backends
from moto.ec2.models.route_tables import RouteTable
from moto.ec2.models.vpcs import VPCEndPoint
from moto.rds.models import DBInstance, DBParameterGroup, rds_backends
from moto.secretsmanager.models import secretsmanager_backends
from moto.server import main


def wrap(cls, name):
    """Decorator: replace cls.name by the function, which is given the original first."""

    def install(fn):
        orig = getattr(cls, name)
        setattr(cls, name, lambda *args, **kwargs: fn(orig, *args, **kwargs))
        return fn

    return install


# 1. A CREATE change set's stack is made from an empty template, and execute_change_set never
# rebuilds it: describe_stacks has no Outputs, and the stack keeps stale template and
# parameters. CloudFormation shows the executed change set's template, parameters and outputs.
# 1b. A resource that fails (moto raises) makes moto's ExecuteChangeSet answer the error itself,
# and the stack stays half made. In CloudFormation the call succeeds and the stack fails
# asynchronously: the resource gets a CREATE_FAILED/UPDATE_FAILED event with its reason, and the
# stack rolls back (ROLLBACK_COMPLETE after a first create, UPDATE_ROLLBACK_COMPLETE with the
# previous template otherwise); the change set's ExecutionStatus is EXECUTE_FAILED.
# Fault injection: PIPELINE_MOTO_FAIL="LogicalId=reason;Other=reason" makes those resources fail
# so, with that reason, when created or updated; "LogicalId@N=reason" only the first N times.
class ResourceFailed(Exception):
    def __init__(self, logical_id, resource_type, reason):
        super().__init__(reason)
        self.logical_id, self.resource_type, self.reason = logical_id, resource_type, reason


def injected_failures():
    """{logical id: (reason, how many times, or None for always)}"""
    pairs = (item.split("=", 1) for item in os.environ.get("PIPELINE_MOTO_FAIL", "").split(";") if "=" in item)
    failures = {}
    for key, reason in pairs:
        logical_id, _, times = key.strip().partition("@")
        failures[logical_id] = (reason, int(times) if times else None)
    return failures


INJECTED_SO_FAR = {}


def injected_failure(logical_id):
    reason, times = injected_failures().get(logical_id, (None, None))
    if reason is None:
        return None
    done = INJECTED_SO_FAR.get(logical_id, 0)
    if times is not None and done >= times:
        return None
    INJECTED_SO_FAR[logical_id] = done + 1
    return reason


def failing(orig):
    def run(logical_id, resource_json, *args, **kwargs):
        resource_type = resource_json.get("Type", "")
        if reason := injected_failure(logical_id):
            raise ResourceFailed(logical_id, resource_type, reason)
        try:
            return orig(logical_id, resource_json, *args, **kwargs)
        except ResourceFailed:
            raise
        except Exception as e:  # what the resource's service refused, as its status reason
            raise ResourceFailed(logical_id, resource_type, getattr(e, "message", None) or str(e)) from e

    return run


cfn_parsing.parse_and_create_resource = failing(cfn_parsing.parse_and_create_resource)
cfn_parsing.parse_and_update_resource = failing(cfn_parsing.parse_and_update_resource)


def resource_event(stack, logical_id, resource_type, status, reason):
    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
        physical_resource_id="", resource_type=resource_type, resource_status=status,
        resource_status_reason=reason, resource_properties=None,
    ))


@wrap(CloudFormationBackend, "execute_change_set")
def execute_change_set(orig, self, change_set_name, stack_name=None):
    change_set = self.describe_change_set(change_set_name)
    stack = self.stacks[change_set.stack_id]
    before = (stack.template, stack.template_dict, stack.parameters)
    try:
        orig(self, change_set_name, stack_name)
    except ResourceFailed as failure:
        create = change_set.change_set_type == "CREATE"
        resource_event(stack, failure.logical_id, failure.resource_type,
                       "CREATE_FAILED" if create else "UPDATE_FAILED", failure.reason)
        change_set.execution_status = "EXECUTE_FAILED"
        if create:
            stack._add_stack_event("ROLLBACK_IN_PROGRESS", resource_status_reason=(
                f"The following resource(s) failed to create: [{failure.logical_id}]. Rollback requested by user."))
            try:
                stack.resource_map.delete()
            except Exception as e:  # a resource the rollback cannot delete (a protected database)
                reason = getattr(e, "message", None) or str(e)
                stack._add_stack_event("ROLLBACK_FAILED", resource_status_reason=(
                    f"The following resource(s) failed to delete: {reason}"))
                stack.status = "ROLLBACK_FAILED"
            else:
                stack._add_stack_event("ROLLBACK_COMPLETE")
                stack.status = "ROLLBACK_COMPLETE"
        else:
            stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason=(
                f"The following resource(s) failed to update: [{failure.logical_id}]."))
            stack.template, stack.template_dict, stack.parameters = before
            with contextlib.suppress(Exception):
                stack.resource_map.update(stack.template_dict, stack.parameters)
            stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")
            stack.status = "UPDATE_ROLLBACK_COMPLETE"
        stack.output_map = stack._create_output_map()
        return
    stack.template_dict = change_set.template_dict
    stack.parameters = change_set.parameters
    stack.output_map = stack._create_output_map()


# 2. DBParameterGroup has no physical id, so {"Ref": "DbParameterGroup"} yields the object and
# DBInstance fails on it (500, no attribute 'startswith'). CloudFormation's Ref gives the name.
DBParameterGroup.physical_resource_id = property(lambda self: self.name)


# 3. Every DBInstance (replicas are copies of their primary) has the same DbiResourceId, and
# GetAtt knows only Endpoint.*: a GetAtt of DbiResourceId in Outputs makes every
# describe_stacks fail (500). RDS gives each instance its own id, "db-" and 26 upper-case
# alphanumerics, and CloudFormation can read it. Here it is derived from the instance's ARN
# (base32 is A-Z2-7); moto's assignments of its constant are ignored.
DBInstance.dbi_resource_id = property(
    lambda self: "db-" + base64.b32encode(hashlib.sha256(self.arn.encode()).digest()).decode()[:26],
    lambda self, value: None,
)


@wrap(DBInstance, "get_cfn_attribute")
def db_instance_attribute(orig, self, attribute_name):
    return self.dbi_resource_id if attribute_name == "DbiResourceId" else orig(self, attribute_name)


DBInstance.has_cfn_attr = classmethod(lambda cls, attr: attr in ("Endpoint.Address", "Endpoint.Port", "DbiResourceId"))


# 3b. DBInstance ignores DeletionProtection in a template, and an update of the instance changes
# nothing. RDS refuses to delete a protected instance (moto's delete_db_instance does too), so
# the rollback of a failed first create that made one ends in ROLLBACK_FAILED (patch 1b), and
# CloudFormation changes DeletionProtection in place ("Update requires: No interruption").
def protected(props):
    value = props.get("DeletionProtection", False)
    return value is True or str(value).lower() == "true"


@wrap(DBInstance, "create_from_cloudformation_json")
def db_instance_from_template(orig, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    instance = orig(resource_name, cloudformation_json, account_id, region_name, **kwargs)
    instance.deletion_protection = protected(cloudformation_json["Properties"])
    return instance


def update_db_instance(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    original_resource.deletion_protection = protected(cloudformation_json["Properties"])
    return original_resource


DBInstance.update_from_cloudformation_json = classmethod(update_db_instance)


# 3c. A DeleteStack whose resources cannot all be deleted (a protected database) answers an error
# and drops the stack all the same. CloudFormation's DeleteStack succeeds and the stack ends in
# DELETE_FAILED, kept, with the reason.
@wrap(CloudFormationBackend, "delete_stack")
def delete_stack(orig, self, name_or_stack_id):
    stack = self.stacks.get(name_or_stack_id) or next(
        (s for s in self.stacks.values() if s.name == name_or_stack_id), None)
    try:
        orig(self, name_or_stack_id)
    except Exception as e:
        if stack is None:
            raise
        reason = getattr(e, "message", None) or str(e)
        self.stacks[stack.stack_id] = stack
        self.deleted_stacks.pop(stack.stack_id, None)
        stack._add_stack_event("DELETE_FAILED", resource_status_reason=(
            f"The following resource(s) failed to delete: {reason}"))
        stack.status = "DELETE_FAILED"


# 4. Moto deletes a stack's resources in any order, retrying those that raise; a primary
# deleted before its read replicas makes their deletion fail (DBInstanceNotFound) and the
# stack's deletion with it. CloudFormation deletes the replicas (which Ref the primary) first.
@wrap(DBInstance, "delete")
def delete_db_instance(orig, self, account_id, region_name):
    if self.replicas:
        raise RuntimeError(f"{self.db_instance_identifier} still has read replicas")
    orig(self, account_id, region_name)


# 5. A RestApi's Body is ignored, so the API has no methods and its AWS::ApiGateway::Deployment
# fails ("The REST API doesn't contain any methods"). CloudFormation imports the Body, an
# OpenAPI document, as PutRestApi does; moto's put_rest_api reads x-amazon-apigateway-integration.
# The import refuses what API Gateway's import refuses (import_errors below), so the stack
# fails as it would in AWS, with the reason as the resource's status reason.
def import_errors(body):
    """What API Gateway's OpenAPI import refuses ("Amazon API Gateway important notes for REST
    APIs"; the Model resource: names are alphanumeric): an invalid OpenAPI 2.0/3.0 document
    (checked with openapi-spec-validator, which moto ships), a version other than those, model
    names that are not alphanumeric, and path segments API Gateway cannot hold."""
    version = str(body.get("openapi", body.get("swagger", "")))
    if not (version == "2.0" or version.startswith("3.0.")):
        return [f"API Gateway imports OpenAPI 2.0 and 3.0 only, found {version!r}"]
    errors = []
    try:
        openapi_spec_validator.validate(body)
    except openapi_spec_validator.validation.exceptions.OpenAPIValidationError as e:
        errors.append(f"Invalid OpenAPI document: {e.message}")
    models = body.get("definitions", {}) if version == "2.0" else body.get("components", {}).get("schemas", {})
    errors += [f"Unable to create model for '{name}': Model name must be alphanumeric: {name}"
               for name in models if not re.fullmatch(r"[A-Za-z0-9]+", name)]
    for path in body.get("paths", {}):
        for segment in path.strip("/").split("/"):
            if segment and not re.fullmatch(r"\{[A-Za-z0-9_.+-]+\}|[A-Za-z0-9_.,:-]+", segment):
                errors.append(f"Resource path part {segment!r} of {path!r} is not valid")
    return errors


def import_body(api_id, body, account_id, region_name):
    if errors := import_errors(body):
        raise BadRequestException("Errors found during import:\n\t" + "\n\t".join(errors))
    apigateway_backends[account_id][region_name].put_rest_api(api_id, body, fail_on_warnings=False, mode="overwrite")


@wrap(RestAPI, "create_from_cloudformation_json")
def rest_api_from_template(orig, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    body = cloudformation_json["Properties"].get("Body")
    if body and (errors := import_errors(body)):
        raise BadRequestException("Errors found during import:\n\t" + "\n\t".join(errors))
    api = orig(resource_name, cloudformation_json, account_id, region_name, **kwargs)
    if body:
        import_body(api.id, body, account_id, region_name)
    return api


# 6. RestAPI has no update_from_cloudformation_json, so an UPDATE that changes the RestApi
# (e.g. its Body) replaces it in the stack by None: Ref Api and the ApiId output vanish.
# CloudFormation updates the API in place, re-importing the Body (refused as in 5).
def update_rest_api_from_template(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    props = cloudformation_json["Properties"]
    if body := props.get("Body"):
        import_body(original_resource.id, body, account_id, region_name)
    original_resource.name, original_resource.description = props["Name"], props.get("Description", "")
    return original_resource


RestAPI.update_from_cloudformation_json = classmethod(update_rest_api_from_template)


# 7. VPCEndPoint, RouteTable and RestAPI cannot be deleted by CloudFormation (no delete
# method), so a deleted stack leaves them (and the interface endpoints' network interfaces)
# behind, and the VPC's deletion fails with DependencyViolation. CloudFormation deletes them.
# Moto deletes a stack's resources in any order, and a gateway endpoint removes its routes from
# its route tables: skip route tables that are already gone.
def delete_vpc_endpoint(self, account_id, region_name):
    backend = ec2_backends[account_id][region_name]
    self.route_table_ids = [rt for rt in self.route_table_ids or [] if rt in backend.route_tables]
    backend.delete_vpc_endpoints([self.id])
    backend.vpc_end_points.pop(self.id, None)


VPCEndPoint.delete = delete_vpc_endpoint
RouteTable.delete = lambda self, account_id, region_name: ec2_backends[account_id][region_name].delete_route_table(self.id)
RestAPI.delete = lambda self, account_id, region_name: apigateway_backends[account_id][region_name].delete_rest_api(self.id)


def resource_type(cfn_type, name_property, create, delete, ref, attributes=None):
    """Teach moto's CloudFormation a type it skips. create(properties, name, backend) returns
    the backend's object; delete(obj, backend); ref(obj) is what Ref returns; attributes maps
    GetAtt names to functions of obj. An update replaces the resource (delete, then create).
    Moto finds types among CloudFormationModel's direct subclasses."""
    attributes, service = attributes or {}, cfn_type.split("::")[1].lower()
    backends = {"secretsmanager": secretsmanager_backends, "lambda": lambda_backends, "rds": rds_backends,
                "cognito": cognitoidp_backends, "apigateway": apigateway_backends}[service]

    def from_template(cls, name, cloudformation_json, account_id, region_name, **kwargs):
        model = cls()
        model.backend = backends[account_id][region_name]
        model.obj = create(cloudformation_json["Properties"], name, model.backend)
        return model

    def update(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        original_resource.delete(account_id, region_name)
        return from_template(cls, new_resource_name, cloudformation_json, account_id, region_name)

    namespace = {
        "__module__": f"moto.{service}.cfn",  # moto files each model under its service
        "cloudformation_type": staticmethod(lambda: cfn_type),
        "cloudformation_name_type": staticmethod(lambda: name_property),
        "create_from_cloudformation_json": classmethod(from_template),
        "update_from_cloudformation_json": classmethod(update),
        "physical_resource_id": property(lambda self: ref(self.obj)),
        "has_cfn_attr": classmethod(lambda cls, attr: attr in attributes),
        "get_cfn_attribute": lambda self, attr: attributes[attr](self.obj),
        "delete": lambda self, account_id, region_name: delete(self.obj, self.backend),
    }
    type(cfn_type.replace("::", ""), (CloudFormationModel,), namespace)


# 8. AWS::SecretsManager::Secret is skipped: Ref of it is empty and outputs made from it vanish
# (the data stack's DbSecretArn). CloudFormation creates the secret, GenerateSecretString
# putting a random password under GenerateStringKey; Ref gives its ARN.
def create_secret(props, name, backend):
    value = props.get("SecretString")
    if generate := props.get("GenerateSecretString"):
        excluded = generate.get("ExcludeCharacters", "")
        alphabet = [c for c in string.ascii_letters + string.digits + string.punctuation if c not in excluded]
        value = "".join(secrets.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
        if template := generate.get("SecretStringTemplate"):
            value = json.dumps({**json.loads(template), generate["GenerateStringKey"]: value})
    created = backend.create_secret(
        name=name, secret_string=value, secret_binary=None, description=props.get("Description"),
        tags=props.get("Tags"), kms_key_id=props.get("KmsKeyId"), client_request_token=None,
        replica_regions=[], force_overwrite=False,
    )
    return json.loads(created)["ARN"]


resource_type(
    "AWS::SecretsManager::Secret", "Name", create_secret, ref=lambda arn: arn,
    delete=lambda arn, backend: backend.delete_secret(arn, recovery_window_in_days=None, force_delete_without_recovery=True),
)

# 9. AWS::Lambda::Alias is skipped, so a permission or event source mapping on the alias ARN
# ("<function ARN>:live") fails with "Function not found" (500). CloudFormation creates the
# alias; Ref gives its ARN. Deleting a function deletes its aliases, and moto may delete the
# function first.
def delete_alias(alias, backend):
    with contextlib.suppress(UnknownFunctionException):
        backend.delete_alias(alias.name, alias.arn.rsplit(":", 1)[0])


resource_type(
    "AWS::Lambda::Alias", "",
    lambda props, name, backend: backend.create_alias(
        props["Name"], props["FunctionName"], props["FunctionVersion"], props.get("Description", ""), props.get("RoutingConfig")
    ),
    delete=delete_alias,
    ref=lambda alias: alias.arn,
)

# 10. AWS::RDS::DBProxy is skipped, and a GetAtt of it in Outputs (prod's DbWriteEndpoint) then
# makes every describe_stacks fail (500). CloudFormation creates the proxy; Ref gives its name.
# A proxy with end-to-end IAM authentication (DefaultAuthScheme IAM_AUTH) has no Auth.
# (AWS::RDS::DBProxyTargetGroup stays skipped: nothing reads it.)
resource_type(
    "AWS::RDS::DBProxy", "DBProxyName",
    lambda props, name, backend: backend.create_db_proxy(
        name, props["EngineFamily"], props.get("Auth", []), props["RoleArn"], props["VpcSubnetIds"],
        props.get("VpcSecurityGroupIds"), props.get("RequireTLS"), props.get("IdleClientTimeout"),
        props.get("DebugLogging"), props.get("Tags"),
    ),
    delete=lambda proxy, backend: backend.delete_db_proxy(proxy.db_proxy_name),
    ref=lambda proxy: proxy.db_proxy_name,
    attributes={"Endpoint": lambda proxy: proxy.endpoint, "DBProxyArn": lambda proxy: proxy.arn},
)


# 10b. AWS::Cognito::UserPool, UserPoolDomain, UserPoolResourceServer and UserPoolClient are
# skipped, so a GetAtt of the user pool (the REST API's Cognito authorizer, in its body) fails
# the app stack with "references undefined resource". CloudFormation creates them: Ref gives
# the pool's id, the domain prefix, the resource server's identifier and the client's id;
# GetAtt Arn the pool's ARN. They are made through moto's own Cognito backend.
def without(props, *keys):
    return {k: v for k, v in props.items() if k not in keys}


resource_type(
    "AWS::Cognito::UserPool", "UserPoolName",
    lambda props, name, backend: backend.create_user_pool(props.get("UserPoolName", name), without(props, "UserPoolName")),
    delete=lambda pool, backend: backend.delete_user_pool(pool.id),
    ref=lambda pool: pool.id,
    attributes={"Arn": lambda pool: pool.arn},
)
def delete_domain(domain, backend):
    from moto.cognitoidp.exceptions import ResourceNotFoundError
    with contextlib.suppress(ResourceNotFoundError):  # its user pool may go first
        backend.delete_user_pool_domain(domain.domain)


resource_type(
    "AWS::Cognito::UserPoolDomain", "",
    lambda props, name, backend: backend.create_user_pool_domain(props["UserPoolId"], props["Domain"]),
    delete=delete_domain,
    ref=lambda domain: domain.domain,
)
resource_type(
    "AWS::Cognito::UserPoolResourceServer", "",
    lambda props, name, backend: backend.create_resource_server(
        props["UserPoolId"], props["Identifier"], props["Name"], props.get("Scopes", [])),
    delete=lambda server, backend: None,  # it goes with its user pool
    ref=lambda server: server.identifier,
)
resource_type(
    "AWS::Cognito::UserPoolClient", "ClientName",
    lambda props, name, backend: backend.create_user_pool_client(
        props["UserPoolId"], bool(props.get("GenerateSecret")), without(props, "UserPoolId", "GenerateSecret")),
    delete=lambda client, backend: backend.delete_user_pool_client(client.user_pool_id, client.id),
    ref=lambda client: client.id,
)

# 10c. AWS::ApiGateway::ApiKey is skipped, so an output that refers to one vanishes (each metering
# key's id). CloudFormation creates the key; Ref gives its id. (The usage plan and its keys'
# association stay skipped: nothing here reads them.)
def delete_api_key(key, backend):
    from moto.apigateway.exceptions import ApiKeyNotFoundException
    with contextlib.suppress(ApiKeyNotFoundException):
        backend.delete_api_key(key.id)


resource_type(
    "AWS::ApiGateway::ApiKey", "Name",
    lambda props, name, backend: backend.create_api_key({
        "name": props.get("Name", name), "description": props.get("Description"),
        "enabled": props.get("Enabled", False) in (True, "true")}),
    delete=delete_api_key,
    ref=lambda key: key.id,
)

# 11. Without Docker, moto invokes only functions of its "simple" Lambda backend, while
# CloudFormation creates functions in the Docker one. Lambda runs the function; here an
# invocation answers the next result queued through /moto-api/static/lambda-simple/response
# (or echoes its payload), and a queued result that is an error object
# ({"errorType": ...}) comes back as the function's error, as Lambda reports one.
@wrap(LambdaBackend, "invoke")
def invoke(orig, self, function_name, qualifier, body, headers, response_headers):
    self.get_function(function_name, qualifier)
    queue = lambda_simple_backends[self.account_id][self.region_name].lambda_simple_results_queue
    result = queue.pop(0) if queue else (body or "{}")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        if "errorType" in json.loads(result):
            response_headers["x-amz-function-error"] = "Unhandled"
    return result.encode() if isinstance(result, str) else result


# 12. AWS::Lambda::Function's PackageType is ignored, so a function made from a container image
# reports "Zip". CloudFormation creates it with the template's PackageType. (moto does not pull
# the ImageUri: by default it stubs ECR, and the image tests push to a real registry.)
@wrap(LambdaFunction, "create_from_cloudformation_json")
def function_from_template(orig, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    fn = orig(resource_name, cloudformation_json, account_id, region_name, **kwargs)
    fn.package_type = cloudformation_json["Properties"].get("PackageType", "Zip")
    return fn


# ---------------------------------------------------------------------------------------------
# Rollout and deploy guards (patches R1-R6). The gate alarms, the published versions' states,
# the account's concurrency and throttling, as the deploy's rollout meets them in AWS.

# R1. AWS::CloudWatch::Alarm is skipped, so the gate alarms of the monitoring stack do not
# exist and a rollout gated on them is refused. CloudFormation creates the alarm with its
# properties (an update replaces it in place under the same name); Ref gives its name.
from moto.cloudwatch.models import cloudwatch_backends  # noqa: E402


def put_alarm_from_template(props, name, account_id, region_name):
    backend = cloudwatch_backends[account_id][region_name]
    return backend.put_metric_alarm(
        name=props.get("AlarmName") or name, namespace=props.get("Namespace"),
        metric_name=props.get("MetricName"), comparison_operator=props["ComparisonOperator"],
        evaluation_periods=int(props["EvaluationPeriods"]), period=int(props.get("Period", 60)),
        threshold=float(props.get("Threshold", 0)), statistic=props.get("Statistic"),
        description=props.get("AlarmDescription", ""), dimensions=props.get("Dimensions", []),
        alarm_actions=props.get("AlarmActions", []), ok_actions=props.get("OKActions", []),
        insufficient_data_actions=props.get("InsufficientDataActions", []),
        datapoints_to_alarm=props.get("DatapointsToAlarm"), extended_statistic=props.get("ExtendedStatistic"),
        unit=props.get("Unit"), actions_enabled=props.get("ActionsEnabled", True),
        treat_missing_data=props.get("TreatMissingData"),
    )


class TemplateAlarm(CloudFormationModel):
    __module__ = "moto.cloudwatch.cfn"

    def __init__(self, alarm, account_id, region_name):
        self.alarm, self.account_id, self.region_name = alarm, account_id, region_name

    @staticmethod
    def cloudformation_type():
        return "AWS::CloudWatch::Alarm"

    @staticmethod
    def cloudformation_name_type():
        return "AlarmName"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        alarm = put_alarm_from_template(cloudformation_json["Properties"], resource_name, account_id, region_name)
        return cls(alarm, account_id, region_name)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        if cloudformation_json["Properties"].get("AlarmName", original_resource.alarm.name) != original_resource.alarm.name:
            original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @property
    def physical_resource_id(self):
        return self.alarm.name

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name):
        return self.alarm.alarm_arn

    def delete(self, account_id, region_name):
        cloudwatch_backends[account_id][region_name].delete_alarms([self.alarm.name])


# R2. DescribeAlarms returns composite alarms even when AlarmTypes is omitted, and never pages.
# CloudWatch returns only metric alarms unless AlarmTypes names CompositeAlarm ("If you omit
# this parameter, only metric alarms are returned"), and answers at most MaxRecords alarms (1
# to 100; 50 here when omitted) with a NextToken for the rest.
from moto.cloudwatch.exceptions import InvalidParameterValue  # noqa: E402
from moto.cloudwatch.responses import CloudWatchResponse  # noqa: E402
from moto.core.responses import ActionResult, BaseResponse  # noqa: E402


# PutCompositeAlarm is not served either; moto keeps a composite alarm as an alarm with a rule,
# which its PutMetricAlarm takes (AlarmRule).
CloudWatchResponse.put_composite_alarm = CloudWatchResponse.put_metric_alarm


@wrap(CloudWatchResponse, "describe_alarms")
def describe_alarms_paged(orig, self):
    result = orig(self).result
    types = self._get_param("AlarmTypes", []) or ["MetricAlarm"]
    alarms = [("MetricAlarms", a) for a in result["MetricAlarms"] if "MetricAlarm" in types]
    alarms += [("CompositeAlarms", a) for a in result["CompositeAlarms"] if "CompositeAlarm" in types]
    size = int(self._get_param("MaxRecords") or 50)
    if not 1 <= size <= 100:
        raise InvalidParameterValue("MaxRecords must be between 1 and 100")
    token = self._get_param("NextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise InvalidParameterValue("The service cannot parse the NextToken") from None
    page = alarms[start:start + size]
    answer = {kind: [a for k, a in page if k == kind] for kind in ("MetricAlarms", "CompositeAlarms")}
    if start + size < len(alarms):
        answer["NextToken"] = str(start + size)
    return ActionResult(answer)


# R3. Lambda's GetAccountSettings is not served, and a function that CloudFormation creates or
# updates with ReservedConcurrentExecutions takes it whatever the account's quota. Lambda
# reports the account's concurrency (AccountLimit.ConcurrentExecutions: the quota, here
# MOTO_LAMBDA_CONCURRENCY_QUOTA or the default 1,000; UnreservedConcurrentExecutions: what the
# functions' reservations leave), and refuses a reservation that would leave fewer than 100
# unreserved ("Configuring reserved concurrency for a function"), so the resource fails.
from moto.awslambda import urls as lambda_urls  # noqa: E402
from moto.awslambda.exceptions import InvalidParameterValueException, LambdaClientError  # noqa: E402
from moto.awslambda.responses import LambdaResponse  # noqa: E402

lambda_urls.url_paths[r"{0}/(?P<api_version>[^/]+)/account-settings/?$"] = LambdaResponse.dispatch


def concurrency_quota():
    return int(os.environ.get("MOTO_LAMBDA_CONCURRENCY_QUOTA", "1000"))


def reserved_elsewhere(backend, function_name):
    return sum(int(f.reserved_concurrency or 0) for f in backend.list_functions() if f.function_name != function_name)


def check_reservation(backend, function_name, reserved):
    if reserved is not None and concurrency_quota() - reserved_elsewhere(backend, function_name) - int(reserved) < 100:
        raise InvalidParameterValueException(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100].")


def get_account_settings(self):
    functions = list(self.backend.list_functions())
    limit = concurrency_quota()
    return 200, {}, json.dumps({
        "AccountLimit": {
            "TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": limit,
            "UnreservedConcurrentExecutions": limit - reserved_elsewhere(self.backend, None),
        },
        "AccountUsage": {"TotalCodeSize": sum(int(f.code_size or 0) for f in functions), "FunctionCount": len(functions)},
    })


LambdaResponse.get_account_settings = get_account_settings


@wrap(LambdaFunction, "create_from_cloudformation_json")
def function_within_quota(orig, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    props = cloudformation_json["Properties"]
    reserved = props.get("ReservedConcurrentExecutions")
    check_reservation(lambda_backends[account_id][region_name], resource_name, reserved)
    fn = orig(resource_name, cloudformation_json, account_id, region_name, **kwargs)
    fn.reserved_concurrency = None if reserved is None else int(reserved)
    return fn


@wrap(LambdaFunction, "update_from_cloudformation_json")
def function_update_within_quota(orig, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
    reserved = cloudformation_json["Properties"].get("ReservedConcurrentExecutions")
    check_reservation(lambda_backends[account_id][region_name], original_resource.function_name, reserved)
    fn = orig(original_resource, new_resource_name, cloudformation_json, account_id, region_name)
    fn.reserved_concurrency = None if reserved is None else int(reserved)
    return fn


# R4. The functions' code does not run here (11): an invocation with nothing queued echoes its
# event, which is no API Gateway proxy answer ("Output format of a Lambda function for proxy
# integration": statusCode, headers, body). Our API functions answer GET /v1/health with 200
# {"status": "ok"} while their database is up, and the loader its {"action": "health"} with
# {"status": "ok"}; with nothing queued, such an event gets that answer. (Queue another result
# to play a failing function.)
@wrap(LambdaBackend, "invoke")
def invoke_health(orig, self, function_name, qualifier, body, headers, response_headers):
    queue = lambda_simple_backends[self.account_id][self.region_name].lambda_simple_results_queue
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        event = json.loads(body or "{}")
        if not queue and event.get("httpMethod") == "GET" and event.get("path", "").endswith("/v1/health"):
            self.get_function(function_name, qualifier)
            return json.dumps({"statusCode": 200, "headers": {"content-type": "application/json"},
                               "body": json.dumps({"status": "ok"}), "isBase64Encoded": False}).encode()
        if not queue and event.get("action") == "health":
            self.get_function(function_name, qualifier)
            return json.dumps({"status": "ok"}).encode()
    return orig(self, function_name, qualifier, body, headers, response_headers)


# R5. Every version is Active at once. A version Lambda has just published may be Pending
# ("Lambda function states"): GetFunctionConfiguration reports State Pending, and Invoke fails
# (ResourceConflictException, 409) until it is Active. Fault injection:
# PIPELINE_MOTO_PENDING=N makes each newly published version report Pending for its first N
# GetFunctionConfiguration calls (default 0: off); with PIPELINE_MOTO_PENDING_FAILS="Code:
# reason" it then becomes Failed with that StateReasonCode and StateReason instead of Active.
from urllib.parse import unquote  # noqa: E402


class ResourceConflict(LambdaClientError):
    code = 409

    def __init__(self, state):
        super().__init__("ResourceConflictException",
                         f"The operation cannot be performed at this time. The function is currently in the following state: {state}")


pending_versions = {}  # function ARN of a version: GetFunctionConfiguration calls left while Pending
state_reasons = {}  # function ARN of a version: its StateReasonCode and StateReason


@wrap(LambdaBackend, "publish_version")
def publish_pending(orig, self, function_name, description=""):
    known = {f.function_arn for f in self._lambdas.all()}
    fn = orig(self, function_name, description)
    calls = int(os.environ.get("PIPELINE_MOTO_PENDING", "0") or 0)
    if fn is not None and calls > 0 and fn.function_arn not in known:
        fn.state = "Pending"
        pending_versions[fn.function_arn] = calls
        state_reasons[fn.function_arn] = {"StateReasonCode": "Creating", "StateReason": "The function is being created."}
    return fn


@wrap(LambdaResponse, "get_function_configuration")
def configuration_while_pending(orig, self):
    function_name = unquote(self.path.rsplit("/", 2)[-2])
    fn = self.backend.get_function(function_name, self._get_param("Qualifier", None))
    arn = fn.function_arn
    if pending_versions.get(arn) == 0:
        del pending_versions[arn]
        code, _, reason = os.environ.get("PIPELINE_MOTO_PENDING_FAILS", "").partition(":")
        fn.state = "Failed" if reason else "Active"
        state_reasons.pop(arn, None)
        if reason:
            state_reasons[arn] = {"StateReasonCode": code.strip(), "StateReason": reason.strip()}
    elif arn in pending_versions:
        pending_versions[arn] -= 1
    answer = json.loads(orig(self))
    answer.update(state_reasons.get(arn, {}))
    return json.dumps(answer)


# moto's Invoke reads its qualifier from `qualifier`, so the SDK's `?Qualifier=` is lost and every
# invocation runs $LATEST. Lambda invokes the version (or alias) the Qualifier names.
@wrap(LambdaResponse, "invoke")
def invoke_qualified(orig, self):
    if "Qualifier" in self.querystring and "qualifier" not in self.querystring:
        self.querystring["qualifier"] = self.querystring["Qualifier"]
    return orig(self)


@wrap(LambdaBackend, "invoke")
def invoke_when_active(orig, self, function_name, qualifier, body, headers, response_headers):
    state = self.get_function(function_name, qualifier).state
    if state != "Active":
        raise ResourceConflict(state)
    return orig(self, function_name, qualifier, body, headers, response_headers)


# R6. Nothing is ever throttled. AWS throttles API calls above its rates: Lambda answers 429
# TooManyRequestsException (REST-JSON: the x-amzn-ErrorType header and a JSON body with Reason
# CallerRateLimitExceeded), CloudFormation and CloudWatch answer 400 with the query protocol's
# error document, Code Throttling ("Rate exceeded"). Fault injection:
# PIPELINE_MOTO_THROTTLE="cloudformation:DescribeStacks=2,lambda:GetFunctionConfiguration=1"
# answers the first N calls of each operation named (service as boto3 names it) so.
throttled_calls = {}


def throttle_left(service, action):
    wanted = {}
    for item in os.environ.get("PIPELINE_MOTO_THROTTLE", "").split(","):
        key, _, count = item.strip().partition("=")
        if key and count.strip().isdigit():
            wanted[key.strip()] = int(count)
    key = f"{service}:{action}"
    if throttled_calls.get(key, 0) >= wanted.get(key, 0):
        return False
    throttled_calls[key] = throttled_calls.get(key, 0) + 1
    return True


QUERY_NAMESPACES = {
    "cloudformation": "http://cloudformation.amazonaws.com/doc/2010-05-15/",
    "cloudwatch": "http://monitoring.amazonaws.com/doc/2010-08-01/",
}


@wrap(BaseResponse, "call_action")
def throttled(orig, self):
    if not os.environ.get("PIPELINE_MOTO_THROTTLE"):
        return orig(self)
    try:
        service, action = self.boto3_service_name, self._get_action()
    except Exception:  # a request of no AWS operation (moto's own API)
        return orig(self)
    if not (action and throttle_left(service, action)):
        return orig(self)
    request_id = secrets.token_hex(16)
    if service == "lambda":
        return 429, {"x-amzn-ErrorType": "TooManyRequestsException", "x-amzn-RequestId": request_id,
                     "Retry-After": "1", "Content-Type": "application/json"}, json.dumps(
            {"Type": "User", "message": "Rate exceeded", "Reason": "CallerRateLimitExceeded"})
    if "json" in self.headers.get("Content-Type", ""):
        return 400, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": "Throttling;Sender",
                     "x-amzn-RequestId": request_id}, json.dumps({"__type": "Throttling", "message": "Rate exceeded"})
    namespace = QUERY_NAMESPACES.get(service, "")
    return 400, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>Throttling</Code>'
        f"<Message>Rate exceeded</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")


# R7. IAM is eventually consistent: right after a role is made, API Gateway can refuse it as the
# account's CloudWatch role (BadRequestException "The role ARN does not have required permissions
# set to API Gateway"), which is why CloudFormation's AWS::ApiGateway::Account fails right after
# its role is created. moto accepts any role at once. Fault injection: PIPELINE_MOTO_ROLE_NOT_YET=N
# refuses the first N UpdateAccount calls that set the role, as API Gateway does while IAM
# catches up.
ROLE_REFUSALS = {"done": 0}


@wrap(APIGatewayBackend, "update_account")
def update_account(orig, self, patch_operations):
    sets_role = any("/cloudwatchRoleArn" in op.get("path", "") for op in patch_operations)
    if sets_role and ROLE_REFUSALS["done"] < int(os.environ.get("PIPELINE_MOTO_ROLE_NOT_YET", "0")):
        ROLE_REFUSALS["done"] += 1
        raise BadRequestException("The role ARN does not have required permissions set to API Gateway")
    return orig(self, patch_operations)


if __name__ == "__main__":
    main(sys.argv[1:])
