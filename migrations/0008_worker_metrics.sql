-- System figures each worker reports with its heartbeat (issue 13, item 5):
-- the process's CPU and resident memory, and per GPU utilisation, memory,
-- temperature and power read through NVML. The workers page shows the newest
-- sample of each worker; a run page charts the samples taken while its job ran
-- (GPU memory is what people look at when a run dies). Workers prune samples
-- older than the retention at start (worker_metrics::prune_older_than).
create table worker_sample (
    worker_sample_id bigint generated always as identity primary key,
    worker_id        uuid not null references worker (worker_id) on delete cascade,
    run_id           uuid references run (run_id) on delete cascade, -- the run its job trained, null when idle
    sampled_at       timestamptz not null default now(),
    cpu_percent      real check (cpu_percent >= 0),             -- of one core: 200 is two cores busy
    rss_bytes        bigint check (rss_bytes >= 0),             -- resident memory of the worker process
    gpus             jsonb not null default '[]'                -- [{index, name, utilization_percent, memory_used_bytes, memory_total_bytes, temperature_c, power_watts}]
                     check (jsonb_typeof(gpus) = 'array')
);

-- The workers page's newest sample per worker, and pruning by age.
create index worker_sample_worker on worker_sample (worker_id, sampled_at desc);
-- A run page's chart.
create index worker_sample_run on worker_sample (run_id, sampled_at) where run_id is not null;
create index worker_sample_time on worker_sample (sampled_at);
