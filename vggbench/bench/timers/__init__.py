"""Programs that `vggbench run --cross-check` starts in fresh processes to time a row's artifact the way its
runtime's own users would (vggbench.bench.crosscheck). Each prints one JSON line: images_per_s, median_ms,
iterations, timed_s. ort_timer imports onnxruntime and numpy only, torch_timer torch only for an exported file
(both are run with `python -I`, which keeps even their own folder off the path); torch_timer imports vggbench
only to rebuild a module backend's model (eager, compile, winograd), as the row's was built."""
