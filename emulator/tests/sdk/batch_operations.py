"""Drives the rest of the Batch data-plane API through Microsoft's azure-batch SDK, unchanged:
job and pool updates with ETags, task counts, dependencies, exit conditions, node files,
subtasks, node counts, supported images, autoscale evaluation and the error shapes.

Reads REDWOOD_BATCH_URL, REDWOOD_BATCH_ACCOUNT and REDWOOD_BATCH_KEY; prints one line per
step and exits non-zero at the first step that does not behave like the service.
"""

import datetime
import os
import sys
import time

import requests
from azure.batch import BatchClient, models
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError


def step(name):
    print(f"ok {name}", flush=True)


def expect_error(name, code, call, status=None):
    try:
        call()
    except HttpResponseError as e:
        got = getattr(getattr(e, "error", None), "code", None)
        if got != code or (status is not None and e.status_code != status):
            sys.exit(f"FAIL {name}: error {e.status_code} {got!r}, want {status} {code!r}: {e}")
        step(name)
        return e
    sys.exit(f"FAIL {name}: no error raised")


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.time() > deadline:
            sys.exit(f"FAIL waited {seconds} s for {what}")
        time.sleep(0.2)


def task_state(client, job, task):
    return client.get_task(job, task).state


def jobs_and_etags(client):
    client.create_job(
        models.BatchJobCreateOptions(
            id="ops-job", pool_info=models.BatchPoolInfo(pool_id="ops-pool"), priority=1
        )
    )
    job = client.get_job("ops-job")
    client.update_job(
        "ops-job",
        models.BatchJobUpdateOptions(priority=7, metadata=[models.BatchMetadataItem(name="k", value="v")]),
        etag=job.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    updated = client.get_job("ops-job")
    assert updated.priority == 7 and updated.metadata[0].value == "v", updated
    assert updated.etag != job.etag
    step("update_job with a current ETag")

    try:
        client.update_job(
            "ops-job", models.BatchJobUpdateOptions(priority=1), etag=job.etag, match_condition=MatchConditions.IfNotModified
        )
        sys.exit("FAIL update_job with a stale ETag was accepted")
    except ResourceModifiedError as e:
        assert e.status_code == 412 and e.error.code == "ConditionNotMet", e
    step("update_job with a stale ETag is 412 ConditionNotMet")

    client.replace_job("ops-job", models.BatchJob(pool_info=models.BatchPoolInfo(pool_id="ops-pool"), priority=3))
    replaced = client.get_job("ops-job")
    assert replaced.priority == 3 and not replaced.metadata, replaced
    step("replace_job resets what it omits")

    expect_error(
        "changing the pool of an active job is refused",
        "OperationInvalidForCurrentState",
        lambda: client.update_job("ops-job", models.BatchJobUpdateOptions(pool_info=models.BatchPoolInfo(pool_id="other"))),
        409,
    )

    # Microsoft's documented pattern: add the tasks, then switch on terminatejob.
    client.create_task("ops-job", models.BatchTaskCreateOptions(id="only", command_line="/bin/true"))
    wait_for("the task to complete", lambda: task_state(client, "ops-job", "only") == models.BatchTaskState.COMPLETED)
    counts = client.get_job_task_counts("ops-job")
    assert counts.task_counts.completed == 1 and counts.task_counts.succeeded == 1, counts
    assert counts.task_counts.active == 0 and counts.task_slot_counts.completed == 1, counts
    step("get_job_task_counts")
    client.update_job("ops-job", models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    job = wait_for("the job to terminate", lambda: (j := client.get_job("ops-job")).state == models.BatchJobState.COMPLETED and j)
    assert job.execution_info.termination_reason == "AllTasksComplete", job.execution_info
    step("update_job to terminatejob ends a job whose tasks are done")

    expect_error(
        "adding a task to a completed job is 409 JobCompleted",
        "JobCompleted",
        lambda: client.create_task("ops-job", models.BatchTaskCreateOptions(id="late", command_line="/bin/true")),
        409,
    )


def disable_and_enable(client):
    client.create_job(models.BatchJobCreateOptions(id="ops-disable", pool_info=models.BatchPoolInfo(pool_id="ops-pool")))
    client.begin_disable_job(
        "ops-disable", models.BatchJobDisableOptions(disable_tasks=models.DisableBatchJobOption.REQUEUE)
    ).result()
    assert client.get_job("ops-disable").state == models.BatchJobState.DISABLED
    client.create_task("ops-disable", models.BatchTaskCreateOptions(id="waits", command_line="/bin/true"))
    time.sleep(1)
    assert task_state(client, "ops-disable", "waits") == models.BatchTaskState.ACTIVE
    client.update_job("ops-disable", models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    expect_error(
        "terminatejob cannot go back to noaction",
        "InvalidPropertyValue",
        lambda: client.update_job("ops-disable", models.BatchJobUpdateOptions(all_tasks_complete_mode="noaction")),
        400,
    )
    client.begin_enable_job("ops-disable").result()
    wait_for("the task to run once enabled", lambda: task_state(client, "ops-disable", "waits") == models.BatchTaskState.COMPLETED)
    wait_for("the job to end", lambda: client.get_job("ops-disable").state == models.BatchJobState.COMPLETED)
    step("begin_disable_job holds tasks, begin_enable_job lets them run")


def dependencies(client):
    client.create_job(models.BatchJobCreateOptions(id="ops-plain", pool_info=models.BatchPoolInfo(pool_id="ops-pool")))
    expect_error(
        "dependsOn on a job without usesTaskDependencies is refused",
        "TaskDependenciesNotSpecifiedOnJob",
        lambda: client.create_task(
            "ops-plain",
            models.BatchTaskCreateOptions(
                id="dep", command_line="/bin/true", depends_on=models.BatchTaskDependencies(task_ids=["waits"])
            ),
        ),
    )
    client.create_job(
        models.BatchJobCreateOptions(
            id="ops-deps", pool_info=models.BatchPoolInfo(pool_id="ops-pool"), uses_task_dependencies=True
        )
    )
    tasks = [
        models.BatchTaskCreateOptions(id="1", command_line="/bin/sh -c 'sleep 1; echo a > $AZ_BATCH_NODE_SHARED_DIR/first'"),
        models.BatchTaskCreateOptions(id="2", command_line="/bin/sh -c 'sleep 1'"),
        models.BatchTaskCreateOptions(
            id="after",
            command_line="/bin/sh -c 'test -f $AZ_BATCH_NODE_SHARED_DIR/first'",
            depends_on=models.BatchTaskDependencies(task_id_ranges=[models.BatchTaskIdRange(start=1, end=2)]),
        ),
        models.BatchTaskCreateOptions(id="fails", command_line="/bin/sh -c 'exit 4'"),
        models.BatchTaskCreateOptions(
            id="blocked", command_line="/bin/true", depends_on=models.BatchTaskDependencies(task_ids=["fails"])
        ),
        models.BatchTaskCreateOptions(
            id="soft-fail",
            command_line="/bin/sh -c 'exit 9'",
            exit_conditions=models.ExitConditions(
                exit_code_ranges=[
                    models.ExitCodeRangeMapping(start=5, end=10, exit_options=models.ExitOptions(dependency_action="satisfy"))
                ]
            ),
        ),
        models.BatchTaskCreateOptions(
            id="unblocked", command_line="/bin/true", depends_on=models.BatchTaskDependencies(task_ids=["soft-fail"])
        ),
    ]
    client.create_task_collection("ops-deps", models.BatchTaskGroup(task_values=tasks))
    wait_for("the dependent tasks to run", lambda: task_state(client, "ops-deps", "after") == models.BatchTaskState.COMPLETED)
    after = client.get_task("ops-deps", "after")
    first = client.get_task("ops-deps", "1")
    assert after.execution_info.exit_code == 0, after.execution_info
    assert after.execution_info.start_time >= first.execution_info.end_time, (after.execution_info, first.execution_info)
    step("a task depending on a range starts after the range completed")
    wait_for("the soft failure to satisfy", lambda: task_state(client, "ops-deps", "unblocked") == models.BatchTaskState.COMPLETED)
    step("dependencyAction satisfy lets dependents run after a failure")
    time.sleep(1)
    assert task_state(client, "ops-deps", "fails") == models.BatchTaskState.COMPLETED
    assert task_state(client, "ops-deps", "blocked") == models.BatchTaskState.ACTIVE
    step("a failed dependency blocks its dependents")


def exit_conditions(client):
    expect_error(
        "a jobAction on a job with onTaskFailure noaction is refused",
        "InvalidPropertyValue",
        lambda: client.create_task(
            "ops-deps",
            models.BatchTaskCreateOptions(
                id="x",
                command_line="/bin/true",
                exit_conditions=models.ExitConditions(default=models.ExitOptions(job_action="terminate")),
            ),
        ),
    )
    client.create_job(
        models.BatchJobCreateOptions(
            id="ops-exit",
            pool_info=models.BatchPoolInfo(pool_id="ops-pool"),
            task_failure_mode=models.BatchTaskFailureMode.PERFORM_EXIT_OPTIONS_JOB_ACTION,
        )
    )
    client.create_task(
        "ops-exit",
        models.BatchTaskCreateOptions(
            id="ends-job",
            command_line="/bin/sh -c 'exit 3'",
            exit_conditions=models.ExitConditions(
                exit_codes=[models.ExitCodeMapping(code=3, exit_options=models.ExitOptions(job_action="terminate"))]
            ),
        ),
    )
    job = wait_for("the job to be terminated", lambda: (j := client.get_job("ops-exit")).state == models.BatchJobState.COMPLETED and j)
    assert job.execution_info.termination_reason == "TaskFailed", job.execution_info
    task = client.get_task("ops-exit", "ends-job")
    assert task.execution_info.failure_info.category == models.BatchErrorSourceCategory.USER_ERROR, task.execution_info
    step("an exit code with jobAction terminate ends the job (TaskFailed)")


def files_and_nodes(client):
    client.create_job(models.BatchJobCreateOptions(id="ops-files", pool_info=models.BatchPoolInfo(pool_id="ops-pool")))
    client.create_task(
        "ops-files",
        models.BatchTaskCreateOptions(id="writer", command_line="/bin/sh -c 'mkdir -p out/deep; echo 0123456789 > out/deep/ten.txt; echo hello'"),
    )
    wait_for("the writer", lambda: task_state(client, "ops-files", "writer") == models.BatchTaskState.COMPLETED)
    part = b"".join(client.download_task_file("ops-files", "writer", "stdout.txt", ocp_range="bytes=1-3"))
    assert part == b"ell", part
    step("download_task_file with ocp_range")
    names = {f.name for f in client.list_task_files("ops-files", "writer", recursive=True)}
    assert "wd/out/deep/ten.txt" in names and "stdout.txt" in names, names
    client.delete_task_file("ops-files", "writer", "wd/out/deep/ten.txt")
    # A download streams, so the SDK does not read the error body: the status tells.
    try:
        b"".join(client.download_task_file("ops-files", "writer", "wd/out/deep/ten.txt"))
        sys.exit("FAIL a deleted task file could still be downloaded")
    except ResourceNotFoundError as e:
        assert e.status_code == 404, e
    step("a deleted task file is not found")
    client.delete_task_file("ops-files", "writer", "wd/out", recursive=True)
    names = {f.name for f in client.list_task_files("ops-files", "writer", recursive=True)}
    assert not any(n.startswith("wd/out") for n in names), names
    step("list_task_files (recursive), delete_task_file (file, folder)")

    node = client.get_task("ops-files", "writer").node_info.node_id
    node_files = {f.name: f for f in client.list_node_files("ops-pool", node, recursive=True)}
    assert any(n.startswith("workitems/ops-files/") and n.endswith("stdout.txt") for n in node_files), sorted(node_files)
    assert node_files["shared"].is_directory, node_files["shared"]
    client.delete_node_file("ops-pool", node, "workitems/ops-files", recursive=True)
    assert not any(f.name.startswith("workitems/ops-files") for f in client.list_node_files("ops-pool", node, recursive=True))
    step("list_node_files (recursive), delete_node_file")

    got = client.get_node("ops-pool", node)
    assert got.vm_size == "standard_d2s_v3" and got.ip_address, got
    step("nodes report vmSize and ipAddress")

    counts = {c.pool_id: c for c in client.list_pool_node_counts()}
    assert counts["ops-pool"].dedicated.total == 2, counts["ops-pool"]
    step("list_pool_node_counts")
    images = list(client.list_supported_images())
    assert any(i.node_agent_sku_id == "batch.node.ubuntu 24.04" for i in images), images
    step("list_supported_images")


def release_task(client):
    client.create_job(
        models.BatchJobCreateOptions(
            id="ops-release",
            pool_info=models.BatchPoolInfo(pool_id="ops-pool"),
            job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/true"),
            job_release_task=models.BatchJobReleaseTask(
                command_line="/bin/sh -c 'echo done > $AZ_BATCH_NODE_SHARED_DIR/released-$AZ_BATCH_JOB_ID'"
            ),
        )
    )
    client.create_task("ops-release", models.BatchTaskCreateOptions(id="work", command_line="/bin/true"))
    wait_for("the task", lambda: task_state(client, "ops-release", "work") == models.BatchTaskState.COMPLETED)
    from azure.batch.models._models import BatchJobTerminateOptions

    client.begin_terminate_job("ops-release", BatchJobTerminateOptions(termination_reason="done")).result()

    def released():
        statuses = list(client.list_job_preparation_and_release_task_status("ops-release"))
        done = [
            s
            for s in statuses
            if s.job_release_task_execution_info is not None
            and s.job_release_task_execution_info.state == models.BatchJobReleaseTaskState.COMPLETED
        ]
        return done if done and len(done) == len(statuses) else None

    done = wait_for("the release task to run", released)
    info = done[0].job_release_task_execution_info
    assert info.exit_code == 0, info
    files = {f.name for f in client.list_node_files("ops-pool", done[0].node_id, recursive=True)}
    assert "shared/released-ops-release" in files, sorted(files)
    step("a job release task runs where the job prepared, once the job ends")


def subtasks(client):
    client.create_job(models.BatchJobCreateOptions(id="ops-mpi", pool_info=models.BatchPoolInfo(pool_id="ops-pool")))
    client.create_task(
        "ops-mpi",
        models.BatchTaskCreateOptions(
            id="mpi",
            command_line="/bin/echo primary",
            multi_instance_settings=models.MultiInstanceSettings(number_of_instances=2, coordination_command_line="/bin/true"),
        ),
    )
    wait_for("the multi-instance task", lambda: task_state(client, "ops-mpi", "mpi") == models.BatchTaskState.COMPLETED)
    subs = list(client.list_subtasks("ops-mpi", "mpi"))
    primary = client.get_task("ops-mpi", "mpi").node_info.node_id
    assert len(subs) == 1 and subs[0].id == 1, subs
    assert subs[0].state == models.BatchSubtaskState.COMPLETED and subs[0].exit_code == 0, subs[0]
    assert subs[0].node_info.node_id != primary, (subs[0].node_info, primary)
    step("list_subtasks of a multi-instance task")


def pools(client):
    pool = client.get_pool("ops-pool")
    client.update_pool(
        "ops-pool",
        models.BatchPoolUpdateOptions(metadata=[models.BatchMetadataItem(name="team", value="hpc")]),
        etag=pool.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    assert client.get_pool("ops-pool").metadata[0].value == "hpc"
    step("update_pool")
    expect_error(
        "changing the vm size of a pool with nodes is refused",
        "OperationInvalidForCurrentState",
        lambda: client.update_pool("ops-pool", models.BatchPoolUpdateOptions(vm_size="standard_d4s_v3")),
        409,
    )
    client.replace_pool_properties(
        "ops-pool",
        models.BatchPoolReplaceOptions(
            start_task=models.BatchStartTask(command_line="/bin/true"), application_package_references=[], metadata=[]
        ),
    )
    replaced = client.get_pool("ops-pool")
    assert replaced.start_task.command_line == "/bin/true" and not replaced.metadata, replaced
    step("replace_pool_properties")

    client.begin_stop_pool_resize("ops-pool").result()
    assert client.get_pool("ops-pool").allocation_state == models.AllocationState.STEADY
    step("begin_stop_pool_resize")

    nodes = [n.id for n in client.list_nodes("ops-pool")]
    client.begin_remove_nodes("ops-pool", models.BatchNodeRemoveOptions(node_ids=nodes[:1])).result()
    left = [n.id for n in client.list_nodes("ops-pool")]
    assert left == nodes[1:] and client.get_pool("ops-pool").target_dedicated_nodes == len(nodes) - 1, left
    step("begin_remove_nodes")

    expect_error(
        "evaluate_pool_auto_scale needs autoscale enabled",
        "AutoScaleNotEnabled",
        lambda: client.evaluate_pool_auto_scale(
            "ops-pool", models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 1;")
        ),
        409,
    )
    client.create_pool(
        models.BatchPoolCreateOptions(
            id="ops-auto",
            vm_size="standard_d2s_v3",
            enable_auto_scale=True,
            auto_scale_formula="$TargetDedicatedNodes = 0;",
        )
    )
    run = client.evaluate_pool_auto_scale(
        "ops-auto",
        models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = max(1, $PendingTasks.GetSample(1));"),
    )
    assert "$TargetDedicatedNodes=1" in run.results and run.error is None, run
    step("evaluate_pool_auto_scale")
    # The article's "pending tasks" formula: a young pool has too few samples, so one node.
    article = (
        "startingNumberOfVMs = 1;\nmaxNumberofVMs = 25;\n"
        "pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);\n"
        "pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : "
        "avg($PendingTasks.GetSample(180 * TimeInterval_Second));\n"
        "$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);\n"
        "$NodeDeallocationOption = taskcompletion;"
    )
    client.enable_pool_auto_scale(
        "ops-auto",
        models.BatchPoolEnableAutoScaleOptions(auto_scale_formula=article, auto_scale_evaluation_interval=datetime.timedelta(minutes=5)),
    )
    pool = wait_for("the pool to follow its formula", lambda: (p := client.get_pool("ops-auto")).target_dedicated_nodes == 1 and p)
    assert "$NodeDeallocationOption=taskcompletion" in pool.auto_scale_run.results, pool.auto_scale_run
    step("enable_pool_auto_scale with the documented pending-tasks formula")
    expect_error(
        "a formula outside the language is refused",
        "InvalidPropertyValue",
        lambda: client.enable_pool_auto_scale(
            "ops-auto", models.BatchPoolEnableAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 1 +;")
        ),
        400,
    )
    run = client.evaluate_pool_auto_scale(
        "ops-auto", models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = $Nope;")
    )
    assert run.error is not None and "$Nope" in run.error.message, run
    step("an evaluation error is reported in the run")


def start_task_retries(client):
    client.create_pool(
        models.BatchPoolCreateOptions(
            id="ops-retry",
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=1,
            start_task=models.BatchStartTask(command_line="/bin/sh -c 'exit 6'", max_task_retry_count=2),
        )
    )

    def failed():
        nodes = list(client.list_nodes("ops-retry"))
        return nodes if nodes and nodes[0].state == models.BatchNodeState.START_TASK_FAILED else None

    info = wait_for("the start task to fail for good", failed)[0].start_task_info
    assert info.retry_count == 2 and info.exit_code == 6, info
    assert info.failure_info.category == models.BatchErrorSourceCategory.USER_ERROR, info
    client.begin_delete_pool("ops-retry").result()
    step("a start task is retried maxTaskRetryCount times")


def wire_enums(client):
    # The SDK reads enums in any case; what the service sends is lower case.
    from azure.core.rest import HttpRequest

    url = os.environ["REDWOOD_BATCH_URL"]
    body = {"value": [{"id": "1", "commandLine": "/bin/true"}]}
    reply = client.send_request(
        HttpRequest("POST", f"{url}/jobs/ops-deps/addtaskcollection?api-version=2025-06-01", json=body)
    )
    assert reply.status_code == 200 and reply.json()["value"][0]["status"] == "clienterror", reply.text
    failed = client.send_request(HttpRequest("GET", f"{url}/jobs/ops-deps/tasks/fails?api-version=2025-06-01"))
    assert failed.json()["executionInfo"]["failureInfo"]["category"] == "usererror", failed.text
    step("enums on the wire are lower case (clienterror, usererror)")


def errors(client):
    url = os.environ["REDWOOD_BATCH_URL"]
    # A verb a path does not take, sent through the SDK's pipeline (signed like any call).
    from azure.core.rest import HttpRequest

    expect_error(
        "a verb a path does not take is 405 UnsupportedHttpVerb with an OData body",
        "UnsupportedHttpVerb",
        lambda: client.send_request(HttpRequest("PUT", f"{url}/pools?api-version=2025-06-01", json={})),
        405,
    )
    expect_error(
        "an operation the emulator lacks says so",
        "NotImplemented",
        lambda: list(client.list_job_schedules()),
        501,
    )
    unsigned = requests.get(f"{url}/jobs?api-version=2025-06-01")
    assert unsigned.status_code in (401, 403) and unsigned.json()["code"], unsigned.text
    step("an unsigned request is refused with an OData body")


def main():
    credential = AzureNamedKeyCredential(os.environ["REDWOOD_BATCH_ACCOUNT"], os.environ["REDWOOD_BATCH_KEY"])
    client = BatchClient(endpoint=os.environ["REDWOOD_BATCH_URL"], credential=credential)
    client.create_pool(
        models.BatchPoolCreateOptions(
            id="ops-pool", vm_size="standard_d2s_v3", target_dedicated_nodes=2, task_slots_per_node=4
        )
    )
    jobs_and_etags(client)
    disable_and_enable(client)
    dependencies(client)
    exit_conditions(client)
    files_and_nodes(client)
    subtasks(client)
    release_task(client)
    pools(client)
    start_task_retries(client)
    wire_enums(client)
    errors(client)
    print("all steps passed", flush=True)


if __name__ == "__main__":
    main()
