#!/bin/sh
# The Batch emulator's mpirun: every node of the emulator is this machine, so the ranks start as
# local processes. It reads the options of the Hydra launcher (Intel MPI, MPICH) that matter here
# and gives each rank PMI_RANK, PMI_SIZE and MPI_LOCALRANKID, as Hydra does.
n=1
ppn=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n|-np) n=$2; shift 2 ;;
    -ppn|-perhost) ppn=$2; shift 2 ;;
    -hosts|-host|-f|-hostfile|-machinefile) shift 2 ;;
    -genv) export "$2=$3"; shift 3 ;;
    -genvall) shift ;;
    --) shift; break ;;
    -*) echo "redwood-emulator mpirun: unsupported option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "redwood-emulator mpirun: no program to start" >&2
  exit 2
fi
pids=""
rank=0
while [ "$rank" -lt "$n" ]; do
  PMI_RANK=$rank PMI_SIZE=$n MPI_LOCALRANKID=$((rank % ppn)) "$@" &
  pids="$pids $!"
  rank=$((rank + 1))
done
status=0
for pid in $pids; do
  wait "$pid" || { code=$?; [ "$status" -eq 0 ] && status=$code; }
done
exit "$status"
