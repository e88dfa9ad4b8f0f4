"""Drives the Redwood Batch emulator with Microsoft's azure-batch SDK, unchanged.

Reads REDWOOD_BATCH_URL, REDWOOD_BATCH_ACCOUNT and REDWOOD_BATCH_KEY; prints one line per
step and exits non-zero at the first step that does not behave like the service.
"""

import os
import sys
import time

from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError


def step(name):
    print(f"ok {name}", flush=True)


def expect_error(name, exc_type, code, call):
    try:
        call()
    except exc_type as e:
        got = getattr(getattr(e, "error", None), "code", None)
        if got != code:
            sys.exit(f"FAIL {name}: error code {got!r}, want {code!r}: {e}")
        step(name)
        return
    sys.exit(f"FAIL {name}: no {exc_type.__name__} raised")


def wait_for(what, check, seconds=30):
    """Polls `check` until it returns something (which is returned), or fails after `seconds`."""
    deadline = time.time() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.time() > deadline:
            sys.exit(f"FAIL waited {seconds} s for {what}")
        time.sleep(0.2)


def main():
    credential = AzureNamedKeyCredential(os.environ["REDWOOD_BATCH_ACCOUNT"], os.environ["REDWOOD_BATCH_KEY"])
    client = BatchClient(endpoint=os.environ["REDWOOD_BATCH_URL"], credential=credential)

    vm = models.VirtualMachineConfiguration(
        image_reference=models.BatchVmImageReference(
            publisher="canonical", offer="ubuntu-24_04-lts", sku="server", version="latest"
        ),
        node_agent_sku_id="batch.node.ubuntu 24.04",
    )
    client.create_pool(
        models.BatchPoolCreateOptions(
            id="sdk-pool",
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=vm,
            target_dedicated_nodes=1,
            task_slots_per_node=2,
            enable_inter_node_communication=True,
        )
    )
    step("create_pool")
    expect_error(
        "create_pool twice is PoolExists",
        ResourceExistsError,
        "PoolExists",
        lambda: client.create_pool(models.BatchPoolCreateOptions(id="sdk-pool", vm_size="standard_d2s_v3")),
    )

    pool = client.get_pool("sdk-pool")
    assert pool.id == "sdk-pool" and pool.vm_size == "standard_d2s_v3", pool
    assert pool.state == models.BatchPoolState.ACTIVE, pool.state
    assert pool.target_dedicated_nodes == 1 and pool.task_slots_per_node == 2
    assert pool.creation_time is not None and pool.etag
    step("get_pool")

    client.begin_resize_pool("sdk-pool", models.BatchPoolResizeOptions(target_dedicated_nodes=2)).result()
    assert client.get_pool("sdk-pool").target_dedicated_nodes == 2
    step("begin_resize_pool")

    client.create_job(
        models.BatchJobCreateOptions(id="sdk-job", pool_info=models.BatchPoolInfo(pool_id="sdk-pool"))
    )
    job = client.get_job("sdk-job")
    assert job.state == models.BatchJobState.ACTIVE, job.state
    step("create_job")

    tasks = [models.BatchTaskCreateOptions(id=f"task-{i}", command_line=f"/bin/echo {i}") for i in range(3)]
    tasks.append(
        models.BatchTaskCreateOptions(
            id="mpi-task",
            command_line="/bin/echo primary",
            multi_instance_settings=models.MultiInstanceSettings(
                number_of_instances=2, coordination_command_line="/bin/echo coordinate"
            ),
        )
    )
    result = client.create_task_collection("sdk-job", models.BatchTaskGroup(task_values=tasks))
    statuses = sorted((r.task_id, r.status) for r in result.result_values)
    assert all(s == models.BatchTaskAddStatus.SUCCESS for _, s in statuses), statuses
    step("create_task_collection (with a multi-instance task)")

    # The tasks run on the emulated nodes: wait until all four completed.
    deadline = time.time() + 30
    while True:
        done = list(client.list_tasks("sdk-job", filter="state eq 'completed'", select=["id", "state", "executionInfo"]))
        if len(done) == 4:
            break
        if time.time() > deadline:
            sys.exit(f"FAIL the tasks did not complete: {done}")
        time.sleep(0.2)
    assert sorted(t.id for t in done) == ["mpi-task", "task-0", "task-1", "task-2"], done
    assert all(t.execution_info.exit_code == 0 for t in done), done
    assert all(t.execution_info.result == models.BatchTaskExecutionResult.SUCCESS for t in done), done
    step("list_tasks with $filter and $select (all completed, exit code 0)")

    stdout = b"".join(client.download_task_file("sdk-job", "task-1", "stdout.txt"))
    assert stdout == b"1\n", stdout
    props = client.get_task_file_properties("sdk-job", "task-1", "stdout.txt")
    assert int(props.content_length) == 2, props
    files = sorted(f.name for f in client.list_task_files("sdk-job", "task-1"))
    assert "stdout.txt" in files and "stderr.txt" in files, files
    step("download_task_file, get_task_file_properties, list_task_files")

    task = client.get_task("sdk-job", "mpi-task")
    assert task.multi_instance_settings.number_of_instances == 2, task
    assert task.command_line == "/bin/echo primary"
    step("get_task")

    expect_error(
        "get_task of a missing task is TaskNotFound",
        ResourceNotFoundError,
        "TaskNotFound",
        lambda: client.get_task("sdk-job", "no-such-task"),
    )

    expect_error(
        "the preparation status of a job without a preparation task is JobPreparationTaskNotSpecified",
        ResourceExistsError,
        "JobPreparationTaskNotSpecified",
        lambda: list(client.list_job_preparation_and_release_task_status("sdk-job")),
    )
    client.create_job(
        models.BatchJobCreateOptions(
            id="sdk-prep-job",
            pool_info=models.BatchPoolInfo(pool_id="sdk-pool"),
            job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/sh -c 'exit 3'"),
        )
    )
    client.create_task(
        "sdk-prep-job", models.BatchTaskCreateOptions(id="never-runs", command_line="/bin/echo no")
    )
    # The preparation task fails on each node it is tried on; the task then waits, never runs.
    def failed_everywhere():
        statuses = list(client.list_job_preparation_and_release_task_status("sdk-prep-job"))
        failure = models.BatchTaskExecutionResult.FAILURE
        failed = [s for s in statuses if s.job_preparation_task_execution_info.result == failure]
        waiting = client.get_task("sdk-prep-job", "never-runs").state == models.BatchTaskState.ACTIVE
        return failed if len(failed) == 2 and waiting else None

    failed = wait_for("the preparation task to fail on both nodes", failed_everywhere)
    info = failed[0].job_preparation_task_execution_info
    assert info.exit_code == 3 and info.state == models.BatchJobPreparationTaskState.COMPLETED, info
    assert failed[0].pool_id == "sdk-pool" and failed[0].node_id, failed[0]
    step("list_job_preparation_and_release_task_status (failed on every node, the task waits)")

    client.create_pool(
        models.BatchPoolCreateOptions(
            id="sdk-start-pool",
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=1,
            start_task=models.BatchStartTask(command_line="/bin/sh -c 'echo no-gpu >&2; exit 5'"),
        )
    )
    def start_failed():
        nodes = list(client.list_nodes("sdk-start-pool"))
        return nodes if nodes and nodes[0].state == models.BatchNodeState.START_TASK_FAILED else None

    nodes = wait_for("the node to become starttaskfailed", start_failed)
    info = nodes[0].start_task_info
    assert info.exit_code == 5 and info.result == models.BatchTaskExecutionResult.FAILURE, info
    stderr = b"".join(client.download_node_file("sdk-start-pool", nodes[0].id, "startup/stderr.txt"))
    assert stderr == b"no-gpu\n", stderr
    client.begin_delete_pool("sdk-start-pool").result()
    step("a failing start task: node starttaskfailed, startTaskInfo, download_node_file")

    # azure-batch 15.1.0 fails client-side without options, and does not export their type.
    from azure.batch.models._models import BatchJobTerminateOptions

    client.begin_terminate_job("sdk-job", BatchJobTerminateOptions(termination_reason="done")).result()
    job = client.get_job("sdk-job")
    assert job.state == models.BatchJobState.COMPLETED, job.state
    assert job.execution_info.termination_reason == "done", job.execution_info
    step("begin_terminate_job")

    client.begin_delete_pool("sdk-pool").result()
    step("begin_delete_pool")
    expect_error(
        "get_pool after delete is PoolNotFound",
        ResourceNotFoundError,
        "PoolNotFound",
        lambda: client.get_pool("sdk-pool"),
    )

    bad = BatchClient(
        endpoint=os.environ["REDWOOD_BATCH_URL"],
        credential=AzureNamedKeyCredential(os.environ["REDWOOD_BATCH_ACCOUNT"], "d3Jvbmcta2V5"),
    )
    expect_error("a wrong key is AuthenticationFailed", HttpResponseError, "AuthenticationFailed", lambda: bad.get_job("sdk-job"))
    print("all steps passed", flush=True)


if __name__ == "__main__":
    main()
