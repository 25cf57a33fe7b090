"""The AWS emulator for dr's tests: moto's server, with the gaps that matter to dr closed.

moto answers every service dr calls, but FailoverGlobalCluster, SwitchoverGlobalCluster and
EKS DescribeUpdate are missing, everything finishes instantly, and CloudWatch does not speak
the Rust SDK's protocol. This launcher wraps moto's WSGI app and adds:

- RDS FailoverGlobalCluster / SwitchoverGlobalCluster, with a FailoverState that moves through
  `pending` and `failing-over` (or `switching-over`) before the writer flips;
- EKS UpdateNodegroupConfig (idempotent on clientRequestToken) whose update stays InProgress
  for a while, and DescribeUpdate;
- Route53 changes that stay PENDING for a while, and settable GetHealthCheckStatus answers;
- Route53's data plane: the hosted zones' authoritative name servers, real DNS over UDP and TCP
  (see "Route53's data plane" below);
- CloudWatch GetMetricData in Smithy RPC v2 CBOR, answering AuroraGlobalDBRPOLag for secondaries;
- DynamoDB tables created from the seed, and conditional writes that are atomic (see "DynamoDB"
  below);
- a test-only admin API under /_dr/: faults per operation, service, region or client
  (throttling, 5xx, latency, a request held unanswered until released, AccessDenied), the log
  of calls, the count of requests per client and operation, the count of mutations applied,
  and a dump of the whole emulated state; and for the DNS server, its own faults (drop,
  SERVFAIL, latency, truncation, no AA flag) and the log of the queries it answered.

Faults. POST /_dr/faults takes a rule, or a list of them:
`{"kind": ..., "operation": "PutItem", "service": "dynamodb", "region": "us-east-2",
"access_key": "daemon-east", "count": 3, "skip": 1, "after_op": "FailoverGlobalCluster"}`.
A rule matches a call on each of `operation`, `service` (the SigV4 credential scope's: `rds`,
`eks`, `route53`, `dynamodb`, ...), `region` and `access_key` (the access key id the call was
signed with, `Credential=<id>/...`) that it names, so a rule naming none of them matches every
call; it lets `skip` matching calls through first, then fires on `count` of them (default: all),
and with `after_op` only once that mutation has been applied. The first rule that matches fires.
Kinds:
- `throttle`: the service's throttling error (`Throttling`; EKS `ThrottlingException` 429;
  Route53 changes `PriorRequestNotComplete`; DynamoDB `ProvisionedThroughputExceededException`);
- `error`: `status` (default 500) with the service's server error (DynamoDB
  `InternalServerError`; with 503, `ServiceUnavailable`);
- `denied`: AccessDenied (403);
- `latency`: `seconds` (default 10) of delay, then the call is served;
- `hold`: the call is held unanswered until POST /_dr/release or DELETE /_dr/faults (or
  `seconds`, default 120), then answered 503 without being applied.
`throttle` and `error` take `code` to answer another error code (e.g. DynamoDB's
`ThrottlingException`), `throttle` takes `status`. Errors are spelled in each service's
protocol; DynamoDB's are JSON, `{"__type": "com.amazonaws.dynamodb.v20120810#<code>",
"message": ...}`. GET /_dr/faults lists the rules with how often each `fired`; DELETE removes
them all (the DNS server's too) and lets held calls go.

Calls. GET /_dr/calls lists every call (op, service, region, access_key, t, outcome; DynamoDB's
with their `table`, and GetItem, Query and Scan with `consistent_read`; mutations with their
`params`) and how many are being held now. The operation is the query protocol's Action, the
JSON protocols' `X-Amz-Target` (`DynamoDB_20120810.PutItem` is `PutItem`), or the REST path's. GET /_dr/requests counts calls
per access key, service and operation since the last DELETE /_dr/requests (or since READY):
`{"since": <unix time>, "seconds": <since then>, "requests": [{"access_key", "service", "op",
"count"}]}`, optionally only one `?service=dynamodb`. Faulted calls count: they were received.

DynamoDB. moto serves it; a seed's `"dynamodb_tables": [{"name": "dr-store", "region":
"us-east-2"}]` creates each table in its region before READY: key `pk` (S, HASH) and `sk` (S,
RANGE), PAY_PER_REQUEST. Every client sees the same tables, whatever its access key. moto reads
an item, checks a ConditionExpression and writes the item as separate steps without a lock, so
two concurrent conditional writes of one key could both succeed; the launcher passes DynamoDB
calls to moto one at a time, making each conditional write atomic as DynamoDB's are. Reads are
always consistent, whatever the call asks: the call log's `consistent_read` tells what it asked.
moto lets an ExpressionAttributeValues entry that no expression uses through (PutItem, Query)
and answers a 500 page for a value an expression uses but the call leaves undefined; the
launcher answers both, like an empty ExpressionAttributeValues or ExpressionAttributeNames, with
DynamoDB's ValidationException (`dynamodb_expression_problem`).

Usage: python moto_launcher.py [--port 0] [--dns-port 0] [--seed world.json]. Once it serves on
127.0.0.1 it prints one line, `READY <port> dns=<dns port> <ids as JSON>` (the ids are the
seed's, `{}` without one), then serves until its standard input is closed.
"""

import argparse
import io
import json
import re
import socket
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs

import cbor2
from dnslib import A, AAAA, CNAME, EDNS0, NS, QTYPE, RCODE, RR, SOA, TXT, DNSHeader, DNSRecord
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)
from werkzeug.serving import make_server

ACCOUNT = "123456789012"

# Timings of the slow operations, in seconds; settable through POST /_dr/timings.
TIMINGS = {
    "failover_pending": 1.0,
    "failover_running": 2.0,
    "nodegroup_update": 2.0,
    "dns_change": 1.0,
}

LOCK = threading.RLock()
STATE = {
    "calls": [],  # every request: op, service, region, outcome
    "applied": {},  # op -> mutations applied
    "faults": [],  # active fault rules
    "transitions": {},  # global cluster id -> in-flight promotion
    "updates": {},  # update id -> EKS update
    "tokens": {},  # (region, cluster, nodegroup, token) -> update id
    "changes": {},  # Route53 change id -> time it becomes INSYNC
    "health": {},  # health check id -> (healthy, total)
    "lag_ms": {},  # cluster id -> lag in ms (None: no datapoint)
    "holding": 0,
    "dns_faults": [],  # active fault rules of the DNS server
    "dns_queries": [],  # every DNS query: name, type, transport, rcode, answers, fault
    "dns_pending": {},  # zone id -> [[time it becomes INSYNC, the zone's records before]]
    "requests": {},  # (access key, service, op) -> requests received since requests_since
    "requests_since": time.time(),
}
RELEASE = threading.Event()
DYNAMODB_LOCK = threading.Lock()

MUTATIONS = {
    "FailoverGlobalCluster",
    "SwitchoverGlobalCluster",
    "UpdateNodegroupConfig",
    "UpdateAutoScalingGroup",
    "ChangeResourceRecordSets",
}


def backends():
    from moto.autoscaling.models import autoscaling_backends
    from moto.eks.models import eks_backends
    from moto.rds.models import rds_backends
    from moto.route53.models import route53_backends

    return rds_backends, eks_backends, autoscaling_backends, route53_backends


def route53_backend():
    """The one Route53 backend: Route53 is global."""
    _, _, _, r53 = backends()
    return r53[ACCOUNT]["global"] if "global" in r53[ACCOUNT] else r53[ACCOUNT]["us-east-1"]


def checker_report(health_check_id):
    """(healthy, total) checkers of a health check: what POST /_dr/health set, else all 16 of 16
    healthy. GetHealthCheckStatus and the DNS data plane both read it here."""
    with LOCK:
        return STATE["health"].get(health_check_id, (16, 16))


def check_is_healthy(health_check_id):
    """Route53's rule, in integers as in dr's `core::health`: healthy when more than 18% of the
    checkers report healthy. A record with no health check is healthy."""
    if not health_check_id:
        return True
    healthy, total = checker_report(health_check_id)
    return healthy * 100 > total * 18


# ---------------------------------------------------------------------------------------------
# Requests: which operation, which region


def credential_scope(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", auth)
    if match:
        return match.group(1), match.group(2)
    return "us-east-1", ""


def access_key_of(environ):
    """The access key id the request was signed with (`Credential=<id>/...`), "" if unsigned."""
    match = re.search(r"Credential=([^/,\s]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else ""


def operation_of(service, method, path, body, environ):
    if service in ("rds", "autoscaling", "sts") or (
        body and body.startswith(b"Action=")
    ):
        form = parse_qs(body.decode("utf-8", "replace"))
        return form.get("Action", ["?"])[0], form
    if service == "monitoring" or "rpc-v2-cbor" in environ.get("HTTP_SMITHY_PROTOCOL", ""):
        return path.rsplit("/", 1)[-1], None
    if environ.get("HTTP_X_AMZ_TARGET"):
        # The JSON protocols (DynamoDB): `X-Amz-Target: DynamoDB_20120810.PutItem`.
        return environ["HTTP_X_AMZ_TARGET"].rsplit(".", 1)[-1], None
    if service == "route53":
        if re.search(r"/hostedzone/[^/]+/rrset/?$", path):
            return (
                "ChangeResourceRecordSets" if method == "POST" else "ListResourceRecordSets"
            ), None
        if re.search(r"/change/[^/]+$", path):
            return "GetChange", None
        if re.search(r"/healthcheck/[^/]+/status$", path):
            return "GetHealthCheckStatus", None
        return f"route53:{method} {path}", None
    if service == "eks":
        if re.search(r"/node-groups/[^/]+/update-config$", path):
            return "UpdateNodegroupConfig", None
        if re.search(r"/clusters/[^/]+/updates/[^/]+$", path):
            return "DescribeUpdate", None
        if re.search(r"/node-groups/[^/]+$", path) and method == "GET":
            return "DescribeNodegroup", None
        return f"eks:{method} {path}", None
    return f"{service}:{method} {path}", None


# ---------------------------------------------------------------------------------------------
# Answers in each protocol


def respond(start_response, status, body, content_type="text/xml", headers=()):
    if isinstance(body, str):
        body = body.encode()
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        409: "Conflict",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def error(start_response, service, status, code, message):
    request_id = str(uuid.uuid4())
    if service == "eks":
        return respond(
            start_response,
            status,
            json.dumps({"message": message}),
            "application/json",
            [("x-amzn-ErrorType", code), ("x-amzn-RequestId", request_id)],
        )
    if service == "dynamodb":
        # awsJson1_0: the code, qualified by its namespace, in `__type`.
        namespace = (
            "com.amazon.coral.service"
            if code == "AccessDeniedException"
            else "com.amazonaws.dynamodb.v20120810"
        )
        return respond(
            start_response,
            status,
            json.dumps({"__type": f"{namespace}#{code}", "message": message}),
            "application/x-amz-json-1.0",
            [("x-amzn-RequestId", request_id)],
        )
    if service == "monitoring":
        return respond(
            start_response,
            status,
            cbor2.dumps({"__type": code, "message": message}),
            "application/cbor",
            [("smithy-protocol", "rpc-v2-cbor")],
        )
    xmlns = (
        ' xmlns="https://route53.amazonaws.com/doc/2013-04-01/"' if service == "route53" else ""
    )
    body = (
        f"<ErrorResponse{xmlns}><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return respond(start_response, status, body)


def throttle_code(service, op):
    if service == "eks":
        return 429, "ThrottlingException"
    if service == "dynamodb":
        return 400, "ProvisionedThroughputExceededException"
    if service == "route53" and op == "ChangeResourceRecordSets":
        return 400, "PriorRequestNotComplete"
    return 400, "Throttling"


# ---------------------------------------------------------------------------------------------
# Faults


def dynamodb_fields(op, body):
    """What the call log keeps of a DynamoDB call: its `table`, and for a read, whether it asked
    for a `consistent_read` (moto's reads are all consistent, so only the log tells)."""
    try:
        request = json.loads(body or b"{}")
        fields = {"table": str(request.get("TableName", ""))}
    except (ValueError, AttributeError):
        return {"table": ""}
    if op in ("GetItem", "Query", "Scan"):
        fields["consistent_read"] = request.get("ConsistentRead") is True
    return fields


DYNAMODB_EXPRESSIONS = (
    "ConditionExpression",
    "UpdateExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
)


def dynamodb_expression_problem(body):
    """Why DynamoDB would reject a call's expression attributes, or None. moto lets a value no
    expression uses through (PutItem, Query) and answers a 500 page for a value an expression
    uses but the call does not define; DynamoDB answers both with a ValidationException, as it
    does an empty ExpressionAttributeValues or ExpressionAttributeNames."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    expressions = {e: request[e] for e in DYNAMODB_EXPRESSIONS if request.get(e)}
    for field, sigil, undefined in (
        (
            "ExpressionAttributeValues", ":",
            "An expression attribute value used in expression is not defined; attribute value",
        ),
        (
            "ExpressionAttributeNames", "#",
            "An expression attribute name used in the document path is not defined; "
            "attribute name",
        ),
    ):
        given = request.get(field)
        if given is not None and not given:
            return f"{field} must not be empty"
        given = set(given or {})
        used = set()
        for expression, text in expressions.items():
            for token in re.findall(re.escape(sigil) + r"[A-Za-z0-9_]+", str(text)):
                if token not in given:
                    return f"Invalid {expression}: {undefined}: {token}"
                used.add(token)
        if given - used:
            unused = ", ".join(sorted(given - used))
            return f"Value provided in {field} unused in expressions: keys: {{{unused}}}"
    return None


def mutation_params(op, form, path, body):
    """The parameters of a mutating call, as `dr`'s dry run prints them."""
    if form is not None:
        def one(key):
            return form.get(key, [""])[0]

        if op in ("FailoverGlobalCluster", "SwitchoverGlobalCluster"):
            params = {
                "GlobalClusterIdentifier": one("GlobalClusterIdentifier"),
                "TargetDbClusterIdentifier": one("TargetDbClusterIdentifier").rsplit(":", 1)[-1],
            }
            if op == "FailoverGlobalCluster":
                params["AllowDataLoss"] = one("AllowDataLoss") or "false"
            return params
        if op == "UpdateAutoScalingGroup":
            return {
                "AutoScalingGroupName": one("AutoScalingGroupName"),
                "MinSize": one("MinSize"),
                "MaxSize": one("MaxSize"),
                "DesiredCapacity": one("DesiredCapacity"),
            }
    if op == "UpdateNodegroupConfig":
        match = re.search(r"/clusters/([^/]+)/node-groups/([^/]+)/update-config$", path)
        request = json.loads(body or b"{}")
        scaling = request.get("scalingConfig") or {}
        return {
            "cluster": match.group(1),
            "nodegroup": match.group(2),
            "clientRequestToken": request.get("clientRequestToken"),
            "min": str(scaling.get("minSize")),
            "max": str(scaling.get("maxSize")),
            "desired": str(scaling.get("desiredSize")),
        }
    if op == "ChangeResourceRecordSets":
        import xml.etree.ElementTree as ET

        zone = re.search(r"/hostedzone/([^/]+)/rrset", path).group(1)
        changes = []
        for change in ET.fromstring(body).iter():
            if change.tag.endswith("}Change") or change.tag == "Change":
                fields = {c.tag.split("}")[-1]: c for c in change.iter()}
                if "SetIdentifier" in fields:
                    which = f"SetIdentifier={fields['SetIdentifier'].text}"
                else:
                    which = f"Name={fields['Name'].text}"
                changes.append(f"{fields['Action'].text} {which}")
        return {"HostedZoneId": zone, "changes": sorted(changes)}
    return {}


def matching_fault(op, service, region, access_key):
    """The fault to apply to this call, if any; counts it down. A rule matches on each of
    `operation`, `service`, `region` and `access_key` it names; one that names none of them
    matches every call."""
    with LOCK:
        for rule in STATE["faults"]:
            if rule.get("operation") and rule["operation"] != op:
                continue
            if rule.get("service") and rule["service"] != service:
                continue
            if rule.get("region") and rule["region"] != region:
                continue
            if rule.get("access_key") and rule["access_key"] != access_key:
                continue
            after = rule.get("after_op")
            if after and STATE["applied"].get(after, 0) == 0:
                continue
            if rule.get("skip", 0) > 0:
                rule["skip"] -= 1
                continue
            if rule.get("count", 1) <= 0:
                continue
            rule["count"] = rule.get("count", 1) - 1
            rule["fired"] = rule.get("fired", 0) + 1
            return dict(rule)
    return None


# ---------------------------------------------------------------------------------------------
# RDS promotions


def global_cluster(gid):
    rds, _, _, _ = backends()
    return rds[ACCOUNT]["us-east-1"].global_clusters.get(gid.lower())


def rds_result(op, cluster):
    return (
        f'<{op}Response xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><{op}Result>'
        f"<GlobalCluster><GlobalClusterIdentifier>{cluster.global_cluster_identifier}"
        f"</GlobalClusterIdentifier><Status>{cluster.status}</Status></GlobalCluster>"
        f"</{op}Result><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
        f"</ResponseMetadata></{op}Response>"
    )


def promote(start_response, op, form):
    gid = form.get("GlobalClusterIdentifier", [""])[0]
    target = form.get("TargetDbClusterIdentifier", [""])[0]
    allow_data_loss = form.get("AllowDataLoss", ["false"])[0] == "true"
    with LOCK:
        cluster = global_cluster(gid)
        if cluster is None:
            return error(
                start_response, "rds", 404, "GlobalClusterNotFoundFault",
                f"Global cluster {gid} not found",
            )
        members = {m.db_cluster_arn: m for m in cluster.members}
        by_id = {m.db_cluster_identifier: m for m in cluster.members}
        member = members.get(target) or by_id.get(target)
        if member is None:
            return error(
                start_response, "rds", 404, "DBClusterNotFoundFault",
                f"DBCluster {target} is not a member of {gid}",
            )
        if gid.lower() in STATE["transitions"]:
            return error(
                start_response, "rds", 400, "InvalidGlobalClusterStateFault",
                f"Global cluster {gid} already has a failover or switchover in progress",
            )
        if member.is_writer:
            return error(
                start_response, "rds", 400, "InvalidGlobalClusterStateFault",
                f"{target} is already the primary cluster of {gid}",
            )
        writer = next((m for m in cluster.members if m.is_writer), None)
        running = "failing-over" if op == "FailoverGlobalCluster" else "switching-over"
        STATE["transitions"][gid.lower()] = {
            "start": time.monotonic(),
            "running": running,
            "to": member.db_cluster_arn,
        }
        cluster.status = running
        cluster.failover_state = {
            "Status": "pending",
            "FromDbClusterArn": writer.db_cluster_arn if writer else None,
            "ToDbClusterArn": member.db_cluster_arn,
            "IsDataLossAllowed": op == "FailoverGlobalCluster" and allow_data_loss,
        }
        STATE["applied"][op] = STATE["applied"].get(op, 0) + 1
        return respond(start_response, 200, rds_result(op, cluster))


def tick():
    """Moves promotions, node group updates along; runs every 50 ms."""
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        with LOCK:
            for gid, t in list(STATE["transitions"].items()):
                cluster = global_cluster(gid)
                if cluster is None:
                    del STATE["transitions"][gid]
                    continue
                elapsed = now - t["start"]
                if elapsed < TIMINGS["failover_pending"]:
                    continue
                if elapsed < TIMINGS["failover_pending"] + TIMINGS["failover_running"]:
                    cluster.failover_state["Status"] = t["running"]
                    continue
                for m in cluster.members:
                    m.is_writer = m.db_cluster_arn == t["to"]
                cluster.failover_state = None
                cluster.status = "available"
                del STATE["transitions"][gid]
            _, eks, _, _ = backends()
            for update in STATE["updates"].values():
                if update["status"] != "InProgress":
                    continue
                if now - update["start"] < TIMINGS["nodegroup_update"]:
                    continue
                group = eks[ACCOUNT][update["region"]].clusters[update["cluster"]].nodegroups[
                    update["nodegroup"]
                ]
                group.scaling_config = dict(update["scaling"])
                group.status = "ACTIVE"
                update["status"] = "Successful"


# ---------------------------------------------------------------------------------------------
# EKS updates


def update_json(update):
    return {
        "id": update["id"],
        "status": update["status"],
        "type": "ConfigUpdate",
        "params": [
            {"type": "MinSize", "value": str(update["scaling"].get("minSize"))},
            {"type": "MaxSize", "value": str(update["scaling"].get("maxSize"))},
            {"type": "DesiredSize", "value": str(update["scaling"].get("desiredSize"))},
        ],
        "createdAt": update["created"],
        "errors": [],
    }


def update_nodegroup(start_response, region, path, body):
    match = re.search(r"/clusters/([^/]+)/node-groups/([^/]+)/update-config$", path)
    cluster_name, nodegroup_name = match.group(1), match.group(2)
    request = json.loads(body or b"{}")
    token = request.get("clientRequestToken") or str(uuid.uuid4())
    _, eks, _, _ = backends()
    with LOCK:
        key = (region, cluster_name, nodegroup_name, token)
        if key in STATE["tokens"]:
            update = STATE["updates"][STATE["tokens"][key]]
            return respond(
                start_response, 200, json.dumps({"update": update_json(update)}),
                "application/json",
            )
        cluster = eks[ACCOUNT][region].clusters.get(cluster_name)
        group = cluster.nodegroups.get(nodegroup_name) if cluster else None
        if group is None:
            return error(
                start_response, "eks", 404, "ResourceNotFoundException",
                f"No node group found for name: {nodegroup_name}.",
            )
        if group.status != "ACTIVE":
            return error(
                start_response, "eks", 409, "ResourceInUseException",
                f"Nodegroup {nodegroup_name} is currently {group.status}",
            )
        scaling = dict(group.scaling_config)
        scaling.update(request.get("scalingConfig") or {})
        update = {
            "id": str(uuid.uuid4()),
            "status": "InProgress",
            "region": region,
            "cluster": cluster_name,
            "nodegroup": nodegroup_name,
            "scaling": scaling,
            "start": time.monotonic(),
            "created": time.time(),
        }
        STATE["updates"][update["id"]] = update
        STATE["tokens"][key] = update["id"]
        group.status = "UPDATING"
        STATE["applied"]["UpdateNodegroupConfig"] = (
            STATE["applied"].get("UpdateNodegroupConfig", 0) + 1
        )
        return respond(
            start_response, 200, json.dumps({"update": update_json(update)}), "application/json"
        )


def describe_update(start_response, region, path):
    match = re.search(r"/clusters/([^/]+)/updates/([^/]+)$", path)
    with LOCK:
        update = STATE["updates"].get(match.group(2))
        if update is None or update["cluster"] != match.group(1) or update["region"] != region:
            return error(
                start_response, "eks", 404, "ResourceNotFoundException",
                f"No update found for ID: {match.group(2)}",
            )
        return respond(
            start_response, 200, json.dumps({"update": update_json(update)}), "application/json"
        )


# ---------------------------------------------------------------------------------------------
# Route53 and CloudWatch


def health_check_status(start_response, path):
    hc = re.search(r"/healthcheck/([^/]+)/status$", path).group(1)
    healthy, total = checker_report(hc)
    observations = "".join(
        f"<HealthCheckObservation><Region>us-east-1</Region><IPAddress>192.0.2.{i}</IPAddress>"
        f"<StatusReport><Status>{'Success: HTTP Status Code 200, OK' if i < healthy else 'Failure: Connection timed out.'}"
        f"</Status><CheckedTime>2026-01-01T00:00:00Z</CheckedTime></StatusReport>"
        f"</HealthCheckObservation>"
        for i in range(total)
    )
    body = (
        '<GetHealthCheckStatusResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<HealthCheckObservations>{observations}</HealthCheckObservations>"
        "</GetHealthCheckStatusResponse>"
    )
    return respond(start_response, 200, body)


def writer_cluster_ids():
    rds, _, _, _ = backends()
    ids = set()
    for cluster in rds[ACCOUNT]["us-east-1"].global_clusters.values():
        for m in cluster.members:
            if m.is_writer:
                ids.add(m.db_cluster_identifier)
    return ids


def get_metric_data(start_response, body):
    request = cbor2.loads(body) if body else {}
    results = []
    writers = writer_cluster_ids()
    for query in request.get("MetricDataQueries", []):
        metric = (query.get("MetricStat") or {}).get("Metric") or {}
        dims = {d.get("Name"): d.get("Value") for d in metric.get("Dimensions", [])}
        cluster = dims.get("DBClusterIdentifier")
        with LOCK:
            lag = STATE["lag_ms"].get(cluster, 1500.0)
        result = {"Id": query.get("Id"), "Label": metric.get("MetricName", ""), "StatusCode": "Complete"}
        if metric.get("MetricName") == "AuroraGlobalDBRPOLag" and cluster not in writers and lag is not None:
            result["Timestamps"] = [cbor2.CBORTag(1, float(int(time.time()) - 30))]
            result["Values"] = [float(lag)]
        else:
            result["Timestamps"] = []
            result["Values"] = []
        results.append(result)
    return respond(
        start_response,
        200,
        cbor2.dumps({"MetricDataResults": results, "Messages": []}),
        "application/cbor",
        [("smithy-protocol", "rpc-v2-cbor")],
    )


# ---------------------------------------------------------------------------------------------
# Route53's data plane: the hosted zones' authoritative name servers
#
# Route53's control plane (the API above) is served from us-east-1; its data plane, the name
# servers of each hosted zone, keeps answering when the control plane is dark. This server is
# that data plane, on 127.0.0.1, over UDP and TCP, answering from moto's records:
#
# - Every public hosted zone is served, authoritatively (AA set, RA clear). A name in no zone is
#   REFUSED; a name in a zone with no records at all, at it or below it, is NXDOMAIN; a name with
#   records of other types only is NOERROR with no answer (NODATA); both carry the zone's SOA.
# - A, AAAA, CNAME, TXT, NS and SOA records are answered; a query for another type is NODATA.
#   A query for another type at a CNAME answers the CNAME and follows it inside the zone.
#   Alias records are not answered.
# - Records without a SetIdentifier are answered as they are. A failover pair answers the
#   PRIMARY while its health check is healthy (or it has none), else the SECONDARY if healthy,
#   else the PRIMARY. Any other set (latency, weighted, ...) answers every record whose health
#   check is healthy, and all of them when none is (Route53's rule). From loopback no region is
#   nearest, so a latency set answers the union of its healthy records, not one of them.
# - A health check's state is the checker report GetHealthCheckStatus answers
#   (`checker_report`), judged by Route53's rule (`check_is_healthy`).
# - A record change is answered once it is INSYNC: until then the zone is answered as it was
#   before the change (real Route53 propagates within 60 s; INSYNC means propagated, so dr
#   reading DNS right after GetChange says INSYNC sees the change, as it would on AWS).
# - The API's faults (POST /_dr/faults) never touch this server: it reads moto's state
#   directly, as the data plane keeps answering while the control plane fails. It has its own
#   faults (POST /_dr/dns/faults): `drop` (no answer; over TCP the connection is closed),
#   `servfail`, `refused`, `latency` (`seconds`, then the answer), `truncate` (UDP only: TC set
#   and no records, so the client must retry over TCP) and `not-authoritative` (AA clear). A rule
#   may name `name`, `type` and `transport` (`udp` or `tcp`) and counts down like the API's.
#   DELETE /_dr/dns/faults removes them; DELETE /_dr/faults removes them with the API's.
# - GET /_dr/dns/queries lists the last 10,000 queries (name, type, transport, fault, rcode, AA,
#   truncated, answers); DELETE /_dr/dns/queries empties the list.
# - Over UDP an answer larger than 512 bytes (or the EDNS payload size the query advertises, at
#   most 4096) is sent truncated: TC set, the question kept, no records.

DNS_QUERY_LOG_LIMIT = 10_000
DNS_TYPES = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT, "NS": NS, "SOA": SOA}


def dns_name(name):
    """A name as the data plane compares it: lower case, no trailing dot."""
    return str(name).rstrip(".").lower()


def record_values(rrset):
    """moto keeps a set's values as strings, or as {"Value": ...} for the zone's SOA."""
    return [v["Value"] if isinstance(v, dict) else str(v) for v in (rrset.records or [])]


def txt_strings(value):
    """The character strings of a Route53 TXT value: `"a" "b"` with `\\"` and `\\\\` escapes,
    or unquoted text as one string; each cut to DNS's 255-byte strings."""
    strings, i = [], 0
    value = value.strip()
    if not value.startswith('"'):
        raw = [value.encode()]
    else:
        raw = []
        while i < len(value):
            if value[i] != '"':
                i += 1
                continue
            i += 1
            out = bytearray()
            while i < len(value) and value[i] != '"':
                if value[i] == "\\" and i + 1 < len(value):
                    i += 1
                out += value[i].encode()
                i += 1
            i += 1
            raw.append(bytes(out))
    for item in raw:
        strings.extend(item[at : at + 255] for at in range(0, max(len(item), 1), 255))
    return strings


def rdata(rtype, value):
    """One value as dnslib record data; None when moto holds a value DNS cannot carry."""
    try:
        if rtype == "TXT":
            return TXT(txt_strings(value))
        if rtype == "SOA":
            mname, rname, *times = value.split()
            return SOA(mname, rname, tuple(int(t) for t in times[:5]))
        return DNS_TYPES[rtype](value)
    except Exception:  # noqa: BLE001 - a bad stored value is skipped, never a crash
        return None


def zone_records(zone_id, zone):
    """The records the name servers answer for a zone: as it was before the oldest change that
    is not INSYNC yet, else as it is."""
    now = time.monotonic()
    with LOCK:
        pending = STATE["dns_pending"].get(zone_id, [])
        pending[:] = [p for p in pending if p[0] > now]
        if pending:
            return pending[0][1]
        return list(zone.rrsets)


def zone_for(qname):
    """The public hosted zone that holds `qname` (the longest match): (id, zone) or None."""
    best = None
    for zone_id, zone in list(route53_backend().zones.items()):
        if getattr(zone, "private_zone", False):
            continue
        apex = dns_name(zone.name)
        if qname == apex or qname.endswith("." + apex):
            if best is None or len(apex) > len(dns_name(best[1].name)):
                best = (zone_id, zone)
    return best


def selected(records, qname, rtype):
    """The record sets Route53 answers for `qname` and `rtype` (see the rules above)."""
    group = [
        rr
        for rr in records
        if dns_name(rr.name) == qname and rr.type == rtype and not rr.alias_target
    ]
    if not any(rr.set_identifier for rr in group):
        return group
    chosen = []
    primary = [rr for rr in group if rr.set_identifier and rr.failover == "PRIMARY"]
    secondary = [rr for rr in group if rr.set_identifier and rr.failover == "SECONDARY"]
    if primary and check_is_healthy(primary[0].health_check_id):
        chosen += primary
    elif secondary and check_is_healthy(secondary[0].health_check_id):
        chosen += secondary
    else:
        chosen += primary or secondary
    others = [rr for rr in group if rr.set_identifier and not rr.failover]
    if others:
        chosen += [rr for rr in others if check_is_healthy(rr.health_check_id)] or others
    return chosen


def resource_records(rrsets, rname, rtype):
    out = []
    for rrset in rrsets:
        ttl = int(rrset.ttl or 300)
        for value in record_values(rrset):
            data = rdata(rtype, value)
            if data is not None:
                out.append(RR(rname, getattr(QTYPE, rtype), ttl=ttl, rdata=data))
    return out


def dns_answer(request):
    """The reply to one parsed query, from moto's current state."""
    reply = DNSRecord(
        DNSHeader(id=request.header.id, qr=1, aa=1, ra=0, rd=request.header.rd),
        q=request.q,
    )
    if request.header.opcode != 0:
        reply.header.aa = 0
        reply.header.rcode = RCODE.NOTIMP
        return reply
    qname = dns_name(request.q.qname)
    qtype = QTYPE.get(request.q.qtype)
    found = zone_for(qname) if request.q.qclass == 1 else None
    if found is None:
        reply.header.aa = 0
        reply.header.rcode = RCODE.REFUSED
        return reply
    zone_id, zone = found
    records = zone_records(zone_id, zone)
    apex = dns_name(zone.name)
    name, rname = qname, request.q.qname
    for _hop in range(8):
        if qtype in DNS_TYPES:
            answers = resource_records(selected(records, name, qtype), rname, qtype)
            if answers:
                for rr in answers:
                    reply.add_answer(rr)
                return reply
        if qtype == "CNAME":
            break
        cname = resource_records(selected(records, name, "CNAME"), rname, "CNAME")
        if not cname:
            break
        reply.add_answer(cname[0])
        rname = cname[0].rdata.label
        name = dns_name(rname)
        if not (name == apex or name.endswith("." + apex)):
            return reply
    if reply.rr:
        return reply
    exists = any(
        dns_name(rr.name) == name or dns_name(rr.name).endswith("." + name) for rr in records
    )
    if not exists:
        reply.header.rcode = RCODE.NXDOMAIN
    for soa in resource_records(selected(records, apex, "SOA"), apex + ".", "SOA"):
        reply.add_auth(soa)
    return reply


def matching_dns_fault(qname, qtype, transport):
    """The DNS fault to apply to this query, if any; counts it down."""
    with LOCK:
        for rule in STATE["dns_faults"]:
            if rule.get("name") and dns_name(rule["name"]) != qname:
                continue
            if rule.get("type") and rule["type"].upper() != qtype:
                continue
            if rule.get("transport") and rule["transport"] != transport:
                continue
            if rule.get("skip", 0) > 0:
                rule["skip"] -= 1
                continue
            if rule.get("count", 1) <= 0:
                continue
            rule["count"] = rule.get("count", 1) - 1
            rule["fired"] = rule.get("fired", 0) + 1
            return dict(rule)
    return None


def dns_reply(data, transport):
    """The bytes to send back for one DNS message, or None to send nothing."""
    try:
        request = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 - a malformed query gets FORMERR, never a crash
        if len(data) < 2:
            return None
        header = DNSHeader(id=int.from_bytes(data[:2], "big"), qr=1, rcode=RCODE.FORMERR)
        return DNSRecord(header).pack()
    if request.header.qr or len(request.questions) != 1:
        header = DNSHeader(id=request.header.id, qr=1, rcode=RCODE.FORMERR)
        return DNSRecord(header).pack()
    qname = dns_name(request.q.qname)
    qtype = QTYPE.get(request.q.qtype)
    entry = {"t": time.time(), "transport": transport, "name": qname, "type": str(qtype)}
    fault = matching_dns_fault(qname, str(qtype), transport)
    kind = fault["kind"] if fault else None
    entry["fault"] = kind
    if kind == "latency":
        time.sleep(float(fault.get("seconds", 10)))
    try:
        if kind in ("servfail", "refused"):
            reply = DNSRecord(
                DNSHeader(id=request.header.id, qr=1, ra=0, rd=request.header.rd), q=request.q
            )
            reply.header.rcode = RCODE.SERVFAIL if kind == "servfail" else RCODE.REFUSED
        else:
            with LOCK:
                reply = dns_answer(request)
    except Exception as e:  # noqa: BLE001 - an emulator bug is a SERVFAIL, not a dead server
        print(f"DNS: {qname} {qtype}: {e!r}", file=sys.stderr, flush=True)
        reply = DNSRecord(
            DNSHeader(id=request.header.id, qr=1, ra=0, rd=request.header.rd), q=request.q
        )
        reply.header.rcode = RCODE.SERVFAIL
    if kind == "not-authoritative":
        reply.header.aa = 0
    edns = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
    if edns is not None:
        reply.add_ar(EDNS0(udp_len=4096))
    packed = reply.pack()
    limit = 512 if edns is None else min(max(edns.rclass, 512), 4096)
    truncated = transport == "udp" and (kind == "truncate" or len(packed) > limit)
    if truncated:
        short = DNSRecord(
            DNSHeader(
                id=request.header.id, qr=1, aa=reply.header.aa, tc=1, ra=0,
                rd=request.header.rd, rcode=reply.header.rcode,
            ),
            q=request.q,
        )
        if edns is not None:
            short.add_ar(EDNS0(udp_len=4096))
        packed = short.pack()
    entry.update(
        rcode=RCODE.get(reply.header.rcode),
        aa=bool(reply.header.aa),
        truncated=truncated,
        answers=[] if truncated else [str(rr.rdata) for rr in reply.rr],
    )
    with LOCK:
        STATE["dns_queries"].append(entry)
        del STATE["dns_queries"][:-DNS_QUERY_LOG_LIMIT]
    return None if kind == "drop" else packed


class DnsServer:
    """The data plane's listeners: UDP and TCP on one port of 127.0.0.1. Every query is answered
    on its own thread, so a `latency` fault on one name holds up no other."""

    def __init__(self, port):
        # With port 0, find a port free for both UDP and TCP.
        for _attempt in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", port))
            chosen = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", chosen))
            except OSError:
                udp.close()
                tcp.close()
                if port:
                    raise
                continue
            tcp.listen(64)
            self.udp, self.tcp, self.port = udp, tcp, chosen
            return
        raise OSError("no loopback port free for both UDP and TCP")

    def start(self):
        threading.Thread(target=self.serve_udp, daemon=True).start()
        threading.Thread(target=self.serve_tcp, daemon=True).start()

    def serve_udp(self):
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                continue
            threading.Thread(target=self.udp_one, args=(data, peer), daemon=True).start()

    def udp_one(self, data, peer):
        packed = dns_reply(data, "udp")
        if packed is not None:
            try:
                self.udp.sendto(packed, peer)
            except OSError:
                pass

    def serve_tcp(self):
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                time.sleep(0.05)
                continue
            threading.Thread(target=self.tcp_one, args=(conn,), daemon=True).start()

    def tcp_one(self, conn):
        """Queries framed by a two-byte length, until the client closes or is idle for 30 s."""
        conn.settimeout(30)
        try:
            while True:
                size = self.read_exactly(conn, 2)
                if size is None:
                    return
                data = self.read_exactly(conn, int.from_bytes(size, "big"))
                if data is None:
                    return
                packed = dns_reply(data, "tcp")
                if packed is None:
                    return
                conn.sendall(len(packed).to_bytes(2, "big") + packed)
        except OSError:
            return
        finally:
            conn.close()

    @staticmethod
    def read_exactly(conn, size):
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data


# ---------------------------------------------------------------------------------------------
# The dump of emulated state


def dump():
    rds, eks, asg, _ = backends()
    out = {"global_clusters": {}, "nodegroups": {}, "autoscaling_groups": {}, "zones": {}}
    for gid, cluster in sorted(rds[ACCOUNT]["us-east-1"].global_clusters.items()):
        out["global_clusters"][gid] = {
            "status": cluster.status,
            "failover_state": getattr(cluster, "failover_state", None),
            "members": sorted(
                [m.db_cluster_arn, bool(m.is_writer)] for m in cluster.members
            ),
        }
    for region, backend in sorted(eks[ACCOUNT].items()):
        for cname, cluster in sorted(backend.clusters.items()):
            for gname, group in sorted(cluster.nodegroups.items()):
                out["nodegroups"][f"{region}/{cname}/{gname}"] = {
                    "status": group.status,
                    "scaling": dict(sorted(group.scaling_config.items())),
                }
    for region, backend in sorted(asg[ACCOUNT].items()):
        for name, group in sorted(backend.autoscaling_groups.items()):
            out["autoscaling_groups"][f"{region}/{name}"] = {
                "min": group.min_size,
                "max": group.max_size,
                "desired": group.desired_capacity,
                "instances": len(group.instance_states),
            }
    for zid, zone in sorted(route53_backend().zones.items()):
        records = []
        for rr in zone.rrsets:
            records.append(
                {
                    "name": rr.name,
                    "type": rr.type,
                    "set_identifier": getattr(rr, "set_identifier", None),
                    "region": getattr(rr, "region", None),
                    "ttl": str(getattr(rr, "ttl", None)),
                    "values": list(getattr(rr, "records", []) or []),
                    "health_check": rr.health_check_id,
                }
            )
        out["zones"][zid] = sorted(records, key=lambda r: json.dumps(r, sort_keys=True))
    with LOCK:
        out["applied"] = dict(sorted(STATE["applied"].items()))
        out["eks_updates"] = len(STATE["updates"])
        out["route53_changes"] = len(STATE["changes"])
    return out


# ---------------------------------------------------------------------------------------------
# Admin API


def admin(environ, start_response, method, path, body):
    def ok(value):
        return respond(start_response, 200, json.dumps(value, sort_keys=True, default=str), "application/json")

    data = json.loads(body) if body else {}
    if path == "/_dr/faults" and method == "POST":
        rules = data if isinstance(data, list) else [data]
        with LOCK:
            for rule in rules:
                rule.setdefault("count", 1_000_000)
                STATE["faults"].append(rule)
        return ok({"faults": len(STATE["faults"])})
    if path == "/_dr/faults" and method == "DELETE":
        # Every fault: the API's and the DNS server's.
        with LOCK:
            STATE["faults"].clear()
            STATE["dns_faults"].clear()
        RELEASE.set()
        return ok({})
    if path == "/_dr/faults":
        with LOCK:
            return ok(STATE["faults"])
    if path == "/_dr/release":
        RELEASE.set()
        return ok({})
    if path == "/_dr/calls":
        with LOCK:
            return ok({"calls": STATE["calls"], "holding": STATE["holding"]})
    if path == "/_dr/applied":
        with LOCK:
            return ok(STATE["applied"])
    if path == "/_dr/requests" and method == "DELETE":
        with LOCK:
            STATE["requests"].clear()
            STATE["requests_since"] = time.time()
            return ok({"since": STATE["requests_since"]})
    if path == "/_dr/requests":
        service = parse_qs(environ.get("QUERY_STRING", "")).get("service", [""])[0]
        with LOCK:
            counts = [
                {"access_key": key, "service": svc, "op": op, "count": n}
                for (key, svc, op), n in sorted(STATE["requests"].items())
                if not service or svc == service
            ]
            since = STATE["requests_since"]
        return ok({"since": since, "seconds": time.time() - since, "requests": counts})
    if path == "/_dr/state":
        with LOCK:
            return ok(dump())
    if path == "/_dr/timings" and method == "POST":
        TIMINGS.update({k: float(v) for k, v in data.items() if k in TIMINGS})
        return ok(TIMINGS)
    if path == "/_dr/health" and method == "POST":
        with LOCK:
            STATE["health"][data["health_check_id"]] = (int(data["healthy"]), int(data["total"]))
        return ok({})
    if path == "/_dr/dns/faults" and method == "POST":
        rules = data if isinstance(data, list) else [data]
        with LOCK:
            for rule in rules:
                rule.setdefault("count", 1_000_000)
                STATE["dns_faults"].append(rule)
        return ok({"faults": len(STATE["dns_faults"])})
    if path == "/_dr/dns/faults" and method == "DELETE":
        with LOCK:
            STATE["dns_faults"].clear()
        return ok({})
    if path == "/_dr/dns/faults":
        with LOCK:
            return ok(STATE["dns_faults"])
    if path == "/_dr/dns/queries" and method == "DELETE":
        with LOCK:
            STATE["dns_queries"].clear()
        return ok({})
    if path == "/_dr/dns/queries":
        with LOCK:
            return ok({"queries": STATE["dns_queries"]})
    if path == "/_dr/lag" and method == "POST":
        with LOCK:
            STATE["lag_ms"][data["cluster"]] = data.get("ms")
        return ok({})
    return respond(start_response, 404, json.dumps({"error": f"no admin route {method} {path}"}), "application/json")


# ---------------------------------------------------------------------------------------------
# The middleware


class Launcher:
    def __init__(self, moto_app):
        self.moto = moto_app

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))

        if path.startswith("/_dr/"):
            return admin(environ, start_response, method, path, body)

        region, service = credential_scope(environ)
        access_key = access_key_of(environ)
        op, form = operation_of(service, method, path, body, environ)
        entry = {
            "op": op,
            "service": service,
            "region": region,
            "access_key": access_key,
            "t": time.time(),
            "outcome": "ok",
        }
        if op in MUTATIONS:
            entry["params"] = mutation_params(op, form, path, body)
        if service == "dynamodb":
            entry.update(dynamodb_fields(op, body))
        with LOCK:
            STATE["calls"].append(entry)
            counted = (access_key, service, op)
            STATE["requests"][counted] = STATE["requests"].get(counted, 0) + 1

        fault = matching_fault(op, service, region, access_key)
        if fault:
            kind = fault["kind"]
            entry["outcome"] = kind
            if kind == "throttle":
                status, code = throttle_code(service, op)
                return error(
                    start_response, service, int(fault.get("status", status)),
                    fault.get("code", code), "Rate exceeded",
                )
            if kind == "error":
                status = int(fault.get("status", 500))
                code = "ServiceUnavailable" if status == 503 else "InternalFailure"
                if service == "eks":
                    code = "ServerException"
                if service == "dynamodb" and status != 503:
                    code = "InternalServerError"
                return error(
                    start_response, service, status, fault.get("code", code),
                    "injected server error",
                )
            if kind == "denied":
                code = (
                    "AccessDeniedException" if service in ("eks", "dynamodb") else "AccessDenied"
                )
                return error(
                    start_response, service, 403, code,
                    f"User: arn:aws:sts::{ACCOUNT}:assumed-role/dr/test is not authorized to perform: {service}:{op}",
                )
            if kind == "latency":
                time.sleep(float(fault.get("seconds", 10)))
            if kind == "hold":
                with LOCK:
                    STATE["holding"] += 1
                RELEASE.clear()
                RELEASE.wait(timeout=float(fault.get("seconds", 120)))
                with LOCK:
                    STATE["holding"] -= 1
                entry["outcome"] = "held, then dropped"
                return error(start_response, service, 503, "ServiceUnavailable", "held by the test, never applied")

        if service == "dynamodb":
            problem = dynamodb_expression_problem(body)
            if problem:
                entry["outcome"] = "HTTP 400"
                return error(start_response, service, 400, "ValidationException", problem)
        if op in ("FailoverGlobalCluster", "SwitchoverGlobalCluster"):
            return promote(start_response, op, form)
        if op == "UpdateNodegroupConfig":
            return update_nodegroup(start_response, region, path, body)
        if op == "DescribeUpdate":
            return describe_update(start_response, region, path)
        if op == "GetHealthCheckStatus":
            return health_check_status(start_response, path)
        if op == "GetMetricData":
            return get_metric_data(start_response, body)

        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        def call_moto():
            chunks = self.moto(environ, capture)
            payload = b"".join(chunks)
            if hasattr(chunks, "close"):
                chunks.close()
            return payload, int(captured["status"].split()[0])

        if op == "ChangeResourceRecordSets":
            # The data plane answers from the zone as it was until the change is INSYNC: keep
            # that copy. Under the lock, so that no DNS answer sees half a change.
            zone_id = re.search(r"/hostedzone/([^/]+)/rrset", path).group(1)
            with LOCK:
                zone = route53_backend().zones.get(zone_id)
                before = list(zone.rrsets) if zone is not None else None
                payload, status_code = call_moto()
                if status_code == 200 and before is not None:
                    STATE["dns_pending"].setdefault(zone_id, []).append(
                        [time.monotonic() + TIMINGS["dns_change"], before]
                    )
        elif service == "dynamodb":
            # moto checks a condition and writes the item as two steps, unlocked: one call at a
            # time, so that each conditional write is atomic as DynamoDB's are.
            with DYNAMODB_LOCK:
                payload, status_code = call_moto()
        else:
            payload, status_code = call_moto()

        if status_code == 200 and op in MUTATIONS:
            with LOCK:
                STATE["applied"][op] = STATE["applied"].get(op, 0) + 1
        if op == "ChangeResourceRecordSets" and status_code == 200:
            match = re.search(rb"<Id>(?:/change/)?([^<]+)</Id>", payload)
            if match:
                with LOCK:
                    STATE["changes"][match.group(1).decode()] = time.monotonic() + TIMINGS["dns_change"]
                payload = payload.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        if op == "GetChange" and status_code == 200:
            change_id = path.rsplit("/", 1)[-1]
            with LOCK:
                until = STATE["changes"].get(change_id)
            if until is not None and time.monotonic() < until:
                payload = payload.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        if status_code >= 400:
            entry["outcome"] = f"HTTP {status_code}"
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(payload))))
        start_response(captured["status"], headers)
        return [payload]


def health_record_changes(world, region, check):
    """The region's health record: a failover pair of TXT records at
    `<set_identifier>.dr-health.<record_name>`. The PRIMARY (SetIdentifier
    `<set_identifier>-healthy`, with the region's health check) answers "healthy"; the SECONDARY
    (`<set_identifier>-unhealthy`, no health check) answers "unhealthy". Route53 answers the
    primary while the health check is healthy, so one DNS query to the zone's name servers tells
    Route53's checkers' verdict without its control plane."""
    name = f"{region['set_identifier']}.dr-health.{world['record_name'].rstrip('.')}"
    pair = [
        ("PRIMARY", "healthy", {"HealthCheckId": check}),
        ("SECONDARY", "unhealthy", {}),
    ]
    return [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": name,
                "Type": "TXT",
                "SetIdentifier": f"{region['set_identifier']}-{verdict}",
                "Failover": failover,
                "TTL": world["ttl"],
                "ResourceRecords": [{"Value": f'"{verdict}"'}],
                **extra,
            },
        }
        for failover, verdict, extra in pair
    ]


def seed(endpoint, world):
    """Creates the deployment in `world` (JSON, written by the test) through the real API, and
    returns the ids AWS generates: the hosted zone's and each region's health check's.

    Each region gets its serving record (unless `"serving": false`) and its health record
    (`health_record_changes`; unless the world says `"health_records": false`). Each of
    `"dynamodb_tables": [{"name": ..., "region": ...}]` is created empty in its region, keyed by
    `pk` (String, HASH) and `sk` (String, RANGE), billed PAY_PER_REQUEST."""
    import boto3

    def client(service, region):
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    gid = world["global_cluster_id"]
    client("rds", world["regions"][0]["name"]).create_global_cluster(
        GlobalClusterIdentifier=gid, Engine="aurora-postgresql", EngineVersion="15.4"
    )
    r53 = client("route53", "us-east-1")
    zone = r53.create_hosted_zone(
        Name=world["zone_name"], CallerReference=str(uuid.uuid4())
    )["HostedZone"]["Id"].split("/")[-1]
    ids = {"hosted_zone_id": zone, "health_checks": {}}
    changes = []
    for index, region in enumerate(world["regions"]):
        name = region["name"]
        rds = client("rds", name)
        args = dict(
            DBClusterIdentifier=region["db_cluster_id"],
            Engine="aurora-postgresql",
            EngineVersion="15.4",
            GlobalClusterIdentifier=gid,
        )
        if index == 0:
            args.update(MasterUsername="dr", MasterUserPassword="not-a-secret-1")
        rds.create_db_cluster(**args)
        eks = client("eks", name)
        eks.create_cluster(
            name=region["eks_cluster"],
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]},
        )
        for group in region["node_groups"]:
            eks.create_nodegroup(
                clusterName=region["eks_cluster"],
                nodegroupName=group["name"],
                nodeRole=f"arn:aws:iam::{ACCOUNT}:role/nodes",
                subnets=["subnet-1"],
                scalingConfig={
                    "minSize": group["min"],
                    "maxSize": group["max"],
                    "desiredSize": group["desired"],
                },
            )
        asg = client("autoscaling", name)
        if region["autoscaling_groups"]:
            asg.create_launch_configuration(
                LaunchConfigurationName=f"{name}-spot",
                ImageId="ami-12c6146b",
                InstanceType="m5.large",
            )
        for group in region["autoscaling_groups"]:
            asg.create_auto_scaling_group(
                AutoScalingGroupName=group["name"],
                LaunchConfigurationName=f"{name}-spot",
                MinSize=group["min"],
                MaxSize=group["max"],
                DesiredCapacity=group["desired"],
                AvailabilityZones=[f"{name}a"],
            )
        check = r53.create_health_check(
            CallerReference=str(uuid.uuid4()),
            HealthCheckConfig={
                "Type": "HTTPS",
                "FullyQualifiedDomainName": f"api-{name}.example.com",
                "Port": 443,
                "ResourcePath": "/health",
                "RequestInterval": 10,
                "FailureThreshold": 3,
            },
        )["HealthCheck"]["Id"]
        ids["health_checks"][name] = check
        if region.get("serving", True):
            changes.append(
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": world["record_name"],
                        "Type": "A",
                        "SetIdentifier": region["set_identifier"],
                        "Region": name,
                        "TTL": world["ttl"],
                        "ResourceRecords": [{"Value": v} for v in region["record_values"]],
                        "HealthCheckId": check,
                    },
                }
            )
        if world.get("health_records", True):
            changes.extend(health_record_changes(world, region, check))
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    for table in world.get("dynamodb_tables", []):
        client("dynamodb", table["region"]).create_table(
            TableName=table["name"],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    return ids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--dns-port", type=int, default=0,
        help="the UDP and TCP port of the DNS data plane (0: any free one)",
    )
    parser.add_argument("--seed", help="a JSON file describing the deployment to create")
    args = parser.parse_args()
    app = Launcher(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    dns = DnsServer(args.dns_port)
    threading.Thread(target=tick, daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dns.start()
    ids = {}
    if args.seed:
        with open(args.seed) as f:
            world = json.load(f)
        ids = seed(f"http://127.0.0.1:{server.server_port}", world)
        with LOCK:
            STATE["calls"].clear()
            STATE["applied"].clear()
            STATE["changes"].clear()
            STATE["dns_pending"].clear()
            STATE["requests"].clear()
            STATE["requests_since"] = time.time()
    print(f"READY {server.server_port} dns={dns.port} {json.dumps(ids)}", flush=True)
    # Until the test that started it closes our stdin (or dies).
    sys.stdin.read()


if __name__ == "__main__":
    sys.exit(main())
