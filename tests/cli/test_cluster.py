"""retina_plugin.cli.cluster: the launch of a training job from the flags, srun's or torchrun's environment."""
import pytest

from retina_plugin.cli.cluster import LaunchError, LaunchPlan, first_host, given_flags, launch_plan
from retina_plugin.cli.train_net import argument_parser

SRUN_PER_NODE = {
    "SLURM_JOB_ID": "4242", "SLURM_STEP_NUM_NODES": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NODEID": "2",
    "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_STEP_NODELIST": "gpu[07-09,12]",
}  # fmt: skip
TORCHRUN = {
    "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
    "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500",
}  # fmt: skip


def plan_of(argv, environ):
    args = argument_parser().parse_args(argv)
    return launch_plan(args, given_flags(argument_parser, argv), environ)


@pytest.mark.parametrize(
    "nodelist, host",
    [("node[01-04],gpu7", "node01"), ("gpu7,node[1-2]", "gpu7"), ("rack[2-3]-n[05-06]", "rack2-n05"),
     ("a[3]", "a3"), ("10.1.2.3", "10.1.2.3"), ("node[010,002-003]", "node010")],
)  # fmt: skip
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_without_a_launcher_the_flags_are_the_plan():
    plan = plan_of(["--num-gpus", "3", "--num-machines", "2", "--machine-rank", "1", "--dist-url", "tcp://h:1"], {})
    assert plan == LaunchPlan(3, 2, 1, "tcp://h:1")


def test_srun_one_task_per_node_starts_num_gpus_processes_on_machine_nodeid():
    plan = plan_of(["--num-gpus", "8"], SRUN_PER_NODE)
    # The port is the job's: 15000 + 4242 % 15000, the same on every node.
    assert plan == LaunchPlan(8, 4, 2, "tcp://gpu07:19242", None, "srun")
    assert plan.world_size == 32
    assert plan_of([], dict(SRUN_PER_NODE, MASTER_ADDR="head", MASTER_PORT="1234")).dist_url == "tcp://head:1234"


def test_a_batch_script_without_srun_trains_on_its_machine_and_says_so(caplog):
    batch_script = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "4", "SLURM_NODEID": "0", "SLURM_PROCID": "0"}
    assert plan_of(["--num-gpus", "8"], batch_script).world_size == 8
    assert "this SLURM job has 4 nodes but the tool was not started by srun" in caplog.text


def test_srun_one_task_per_gpu_is_one_rank_per_process():
    environ = dict(SRUN_PER_NODE, SLURM_STEP_NUM_TASKS="8", SLURM_PROCID="5", SLURM_LOCALID="1")
    assert plan_of([], environ) == LaunchPlan(2, 4, 2, "tcp://gpu07:19242", 1, "srun")


def test_srun_tasks_that_are_not_blocks_of_the_nodes_are_refused():
    with pytest.raises(LaunchError, match=r"srun started 6 task\(s\) on 4 node\(s\).*--ntasks-per-node"):
        plan_of([], dict(SRUN_PER_NODE, SLURM_STEP_NUM_TASKS="6"))
    with pytest.raises(LaunchError, match="task 3 being task 0 of node 2"):
        plan_of([], dict(SRUN_PER_NODE, SLURM_STEP_NUM_TASKS="8", SLURM_PROCID="3"))


def test_torchrun_each_process_joins_one_group_as_its_rank():
    plan = plan_of([], TORCHRUN)
    assert plan == LaunchPlan(2, 2, 1, "env://", 1, "torchrun")
    assert plan.world_size == 4


def test_torchrun_with_num_gpus_is_refused_naming_both():
    with pytest.raises(LaunchError, match=r"--num-gpus 2 under torchrun, which started 2 process\(es\) on this machine, each one rank of 4"):
        plan_of(["--num-gpus", "2"], TORCHRUN)
    assert plan_of(["--num-gpus", "1"], TORCHRUN).processes_per_machine == 2


def test_torchrun_ranks_out_of_their_machines_are_refused():
    with pytest.raises(LaunchError, match="RANK 2 of WORLD_SIZE 4 is not LOCAL_RANK 1"):
        plan_of([], dict(TORCHRUN, RANK="2"))
    with pytest.raises(LaunchError, match="without MASTER_ADDR"):
        plan_of([], {k: v for k, v in TORCHRUN.items() if k != "MASTER_ADDR"})
    with pytest.raises(LaunchError, match="WORLD_SIZE='four' is not an integer"):
        plan_of([], dict(TORCHRUN, WORLD_SIZE="four"))


def test_flags_on_the_command_line_win_over_the_environment():
    plan = plan_of(["--dist-url=tcp://10.9.9.9:7000", "--machine-rank", "0"], SRUN_PER_NODE)
    assert (plan.num_machines, plan.machine_rank, plan.dist_url) == (4, 0, "tcp://10.9.9.9:7000")
    # A flag given with Detectron2's default value is still given.
    assert plan_of(["--num-machines", "1", "--machine-rank", "0"], SRUN_PER_NODE).world_size == 1


def test_contradictory_plans_are_refused_in_one_line():
    with pytest.raises(LaunchError, match="machine rank 4 of 4 machine"):
        plan_of(["--machine-rank", "4"], SRUN_PER_NODE)
    with pytest.raises(LaunchError, match="--dist-url auto picks a port on one machine, not 2"):
        plan_of(["--num-machines", "2", "--dist-url", "auto"], {})
    with pytest.raises(LaunchError, match="--heartbeat-timeout 400 must be under --dist-timeout 300"):
        plan_of(["--num-gpus", "2", "--heartbeat-timeout", "400"], {})
