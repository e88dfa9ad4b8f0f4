//! Formulas from Microsoft's autoscale article, evaluated on a made-up history.

use super::*;

fn history(pending: f64, samples: usize) -> History {
    let mut h = History::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut sample: Sample = [0.0; eval::METRICS.len()];
    sample[metric("$PendingTasks").unwrap()] = pending;
    sample[metric("$ActiveTasks").unwrap()] = pending;
    sample[metric("$CurrentDedicatedNodes").unwrap()] = 5.0;
    sample[metric("$CPUPercent").unwrap()] = 90.0;
    for i in (0..samples).rev() {
        h.record(now - (i as f64) * 30.0, sample, 4.0);
    }
    h
}

#[test]
fn the_articles_pending_tasks_formula() {
    let formula = "startingNumberOfVMs = 1;
        maxNumberofVMs = 25;
        pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
        pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
        $TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
        $NodeDeallocationOption = taskcompletion;";
    // A young pool has too few samples: the formula starts with one node.
    let young = evaluate(formula, &history(40.0, 1), (0, 0)).unwrap();
    assert_eq!(young.dedicated, 1, "{young:?}");
    assert_eq!(young.deallocation, "taskcompletion");
    // Six samples over three minutes: the average of pending tasks, capped at 25.
    let old = evaluate(formula, &history(40.0, 7), (0, 0)).unwrap();
    assert_eq!(old.dedicated, 25, "{old:?}");
    assert!(
        old.results.starts_with("$TargetDedicatedNodes=25;"),
        "{}",
        old.results
    );
    assert!(
        old.results.contains("pendingTaskSamplePercent=100"),
        "{}",
        old.results
    );
}

#[test]
fn the_articles_other_examples() {
    let h = history(3.0, 31);
    let time_based = "$curTime = time();
        $workHours = $curTime.hour >= 8 && $curTime.hour < 18;
        $isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
        $isWorkingWeekdayHour = $workHours && $isWeekday;
        $TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
        $NodeDeallocationOption = taskcompletion;";
    let t = evaluate(time_based, &h, (0, 0)).unwrap();
    assert!(t.dedicated == 20 || t.dedicated == 10, "{t:?}");
    let tasks = "// Get pending tasks for the past 15 minutes.
        $samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
        $tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
        $targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
        $TargetDedicatedNodes = max(0, min($targetVMs, 20));
        $NodeDeallocationOption = taskcompletion;";
    assert_eq!(evaluate(tasks, &h, (4, 0)).unwrap().dedicated, 3);
    let cpu = "$totalDedicatedNodes =
            (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
            ($CurrentDedicatedNodes * 1.1) : $CurrentDedicatedNodes;
        $TargetDedicatedNodes = min(400, $totalDedicatedNodes)";
    assert_eq!(
        evaluate(cpu, &h, (0, 0)).unwrap().dedicated,
        5,
        "5.5 nodes is 5"
    );
    let preempted = "maxNumberofVMs = 25;
        $TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
        $TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);";
    let p = evaluate(preempted, &h, (0, 0)).unwrap();
    assert_eq!((p.dedicated, p.low_priority), (0, 25));
    let percent =
        "$s = $PendingTasks.GetSample(TimeInterval_Minute * 10, 95); $TargetDedicated = 1;";
    assert!(
        evaluate(percent, &history(1.0, 2), (0, 0))
            .unwrap_err()
            .contains("95% were asked for")
    );
    assert_eq!(
        evaluate(percent, &h, (0, 0)).unwrap().dedicated,
        1,
        "an alias sets the target"
    );
    let stats =
        "v = [1, 2, 3, 10]; a = percentile(v, 50); b = val(v, 3); c = std(v) > 4; d = len(v, 7);
        $TargetDedicatedNodes = a + b + c + d; stop(); $TargetDedicatedNodes = 99;";
    // The 50th percentile of [1, 2, 3, 10] by nearest rank is 3.
    assert_eq!(
        evaluate(stats, &h, (0, 0)).unwrap().dedicated,
        3 + 10 + 1 + 5
    );
}

#[test]
fn what_is_outside_the_language_is_named() {
    let h = history(1.0, 1);
    let err = |f: &str| evaluate(f, &h, (0, 0)).unwrap_err();
    assert!(err("$TargetDedicatedNodes = $Nope;").contains("$Nope"));
    assert!(err("$TargetDedicatedNodes = 1 / 0;").contains("division by zero"));
    assert!(err("$TargetDedicatedNodes = foo(1);").contains("`foo` is not a function"));
    assert!(err("$PendingTasks = 1;").contains("read-only"));
    assert!(err("$NodeDeallocationOption = 3;").contains("must be one of"));
    assert!(err("$TargetDedicatedNodes = TimeInterval_Fortnight;").contains("Fortnight"));
    assert!(err("$TargetDedicatedNodes = $PendingTasks.Median();").contains("Median"));
    assert!(err(&"x = 1;".repeat(101)).contains("100 statements"));
    assert!(err(&format!("x = {};", "1+".repeat(5000) + "1")).contains("8192 bytes"));
    let deep = format!(
        "$TargetDedicatedNodes = {}1{};",
        "min(1,".repeat(1000),
        ")".repeat(1000)
    );
    assert!(err(&deep).contains("nests"));
    assert!(err("$TargetDedicatedNodes = 1e308 * 10;").contains("finite"));
}
