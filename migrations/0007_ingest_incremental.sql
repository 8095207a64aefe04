-- Ingest at a cost that does not grow with the run nor with the number of
-- clients (issue 12's bar: 20x MLflow's rows/s with one row per request).
-- ingest_points (0005) took one batch, rebuilt each touched epoch row from
-- metric_point, rescanned all of the run's epochs for its summary and
-- updated the run row three times: 1.2 ms a batch at epoch 0 and 2.2 ms at
-- epoch 1,800 (pgbench, one client), ~1,300 batches/s with 32 clients.
--
-- ingest_group takes the batches of many runs at once (the server gathers
-- the ones that arrive together into one transaction) and does each step
-- once for all of them:
-- - the runs are locked in id order (two groups never deadlock each other);
--   each gets an outcome, and points of a run that cannot take them (unknown,
--   a worker's, finished) are not written;
-- - the epoch rows are upserted from the points themselves: a column the
--   group has replaces the stored value (last write wins), one it lacks
--   keeps it, so keys sent in different batches still meet in one row;
-- - a run's summary is extended in place when its points only append epochs
--   past its last one and carry no images_per_second (an average needs a
--   count the summary does not keep); any other run (old epochs rewritten,
--   steps out of order) is rebuilt from its epoch rows as before.
-- The caller passes each (run, key, step) once and marks the points of
-- epoch keys (p_epoch), so the key list lives in one place (Rust's EPOCH_KEYS)
-- besides the column names below.
drop function ingest_points(uuid, text[], bigint[], float8[], timestamptz[], bigint[]);

-- Every batch writes its run's last_seen_at, which the lost sweep's index
-- held: each write was then a non-HOT update, a new entry in every index of
-- run (the GIN on tags included) and a bloated table (5.5 MB for 60 runs
-- after 10,000 batches, 0 HOT updates). The sweep needs only the running
-- external runs, few; it filters their last_seen_at itself. Room on each
-- page keeps the updates HOT.
drop index run_external_running;
create index run_external_running on run (run_id) where source = 'external' and status = 'running';
alter table run set (fillfactor = 80);

create function ingest_group(p_runs uuid[], p_keys text[], p_steps bigint[], p_values float8[],
                             p_times timestamptz[], p_epoch boolean[])
returns table (run_id uuid, outcome text, first_epoch integer, last_epoch integer)
language plpgsql as $$
declare
    v_ok uuid[];
    v_rebuild uuid[];
begin
    perform 1 from run r where r.run_id = any(p_runs) order by r.run_id for no key update;
    select coalesce(array_agg(r.run_id), '{}') into v_ok
    from run r
    where r.run_id = any(p_runs) and r.source = 'external' and r.status in ('running', 'lost');
    -- Their clients are back (names `status`, so the status NOTIFY fires).
    update run r set status = 'running', finished_at = null, error = null
    where r.run_id = any(v_ok) and r.status = 'lost';
    perform set_config('maelab.batch', 'on', true);

    insert into metric_point (run_id, key, step, value, wall_time)
    select u.r, u.k, u.s, u.v, u.t
    from unnest(p_runs, p_keys, p_steps, p_values, p_times) as u(r, k, s, v, t)
    where u.r = any(v_ok)
    on conflict on constraint metric_point_pkey do update
        set value = excluded.value, wall_time = excluded.wall_time, recorded_at = now();

    -- One statement: the epoch rows, then each run's row once (last seen,
    -- size, and the summary where it can be extended in place). Its CTEs
    -- all read the run rows as they were before it, as `extend` needs.
    with grouped as (
        select u.r, u.s::integer as epoch,
               max(u.v) filter (where u.k = 'train_lr') as train_lr,
               max(u.v) filter (where u.k = 'train_loss') as train_loss,
               max(u.v) filter (where u.k = 'test_loss') as test_loss,
               max(u.v) filter (where u.k = 'test_acc1') as test_acc1,
               max(u.v) filter (where u.k = 'test_acc5') as test_acc5,
               (max(u.v) filter (where u.k = 'n_parameters'))::bigint as n_parameters,
               max(u.v) filter (where u.k = 'psnr') as psnr,
               max(u.v) filter (where u.k = 'hf_ratio') as hf_ratio,
               max(u.v) filter (where u.k = 'epoch_seconds') as epoch_seconds,
               max(u.v) filter (where u.k = 'images_per_second') as images_per_second
        from unnest(p_runs, p_keys, p_steps, p_values, p_epoch) as u(r, k, s, v, e)
        where u.e and u.r = any(v_ok)
        group by u.r, u.s
    ), written as (
        insert into epoch_metric as m (run_id, epoch, train_lr, train_loss, test_loss, test_acc1,
             test_acc5, n_parameters, psnr, hf_ratio, epoch_seconds, images_per_second, extra)
        select g.r, g.epoch, g.train_lr, g.train_loss, g.test_loss, g.test_acc1, g.test_acc5,
               g.n_parameters, g.psnr, g.hf_ratio, g.epoch_seconds, g.images_per_second, '{}'::jsonb
        from grouped g
        on conflict on constraint epoch_metric_pkey do update set
            train_lr = coalesce(excluded.train_lr, m.train_lr),
            train_loss = coalesce(excluded.train_loss, m.train_loss),
            test_loss = coalesce(excluded.test_loss, m.test_loss),
            test_acc1 = coalesce(excluded.test_acc1, m.test_acc1),
            test_acc5 = coalesce(excluded.test_acc5, m.test_acc5),
            n_parameters = coalesce(excluded.n_parameters, m.n_parameters),
            psnr = coalesce(excluded.psnr, m.psnr),
            hf_ratio = coalesce(excluded.hf_ratio, m.hf_ratio),
            epoch_seconds = coalesce(excluded.epoch_seconds, m.epoch_seconds),
            images_per_second = coalesce(excluded.images_per_second, m.images_per_second),
            recorded_at = now()
        returning m.run_id, m.epoch, (m.xmax = 0) as inserted, m.train_loss, m.test_acc1,
                  m.test_acc5, m.n_parameters, m.epoch_seconds, m.images_per_second
    ), agg as (
        select w.run_id, count(*) as n, count(*) filter (where w.inserted) as n_inserted,
               min(w.epoch) as first_epoch, max(w.epoch) as last_epoch,
               max(w.test_acc1) as acc1, max(w.test_acc5) as acc5, sum(w.epoch_seconds) as seconds,
               count(w.images_per_second) as ips_rows, max(w.n_parameters) as params,
               (array_agg(w.train_loss order by w.epoch desc))[1] as last_loss
        from written w group by w.run_id
    ), runs as (
        select o.id, a.n, a.last_epoch, a.acc1, a.acc5, a.seconds, a.params, a.last_loss,
               coalesce(a.n = a.n_inserted and a.first_epoch > coalesce(r.last_epoch, -1)
                        and a.ips_rows = 0, false) as extend,
               a.run_id is not null as wrote
        from unnest(v_ok) as o(id)
        join run r on r.run_id = o.id
        left join agg a on a.run_id = o.id
    ), updated as (
        -- Only new epochs past the last: extend (greatest() skips nulls, like max()).
        update run r set
            last_seen_at = now(),
            epochs_total = greatest(r.epochs_total, coalesce(x.last_epoch + 1, 0)),
            epochs_done = case when x.extend then r.epochs_done + x.n else r.epochs_done end,
            last_epoch = case when x.extend then x.last_epoch else r.last_epoch end,
            best_acc1 = case when x.extend then greatest(r.best_acc1, x.acc1) else r.best_acc1 end,
            best_acc5 = case when x.extend then greatest(r.best_acc5, x.acc5) else r.best_acc5 end,
            last_train_loss = case when x.extend then x.last_loss else r.last_train_loss end,
            train_seconds = case
                when not x.extend or (r.train_seconds is null and x.seconds is null) then r.train_seconds
                else coalesce(r.train_seconds, 0) + coalesce(x.seconds, 0) end,
            epoch_n_parameters = case when x.extend then greatest(r.epoch_n_parameters, x.params)
                                      else r.epoch_n_parameters end
        from runs x
        where r.run_id = x.id
        returning r.run_id
    )
    select coalesce(array_agg(x.id) filter (where x.wrote and not x.extend), '{}')
    into v_rebuild
    from runs x;
    -- Any other run that got epoch rows: its summary from all of them.
    perform run_summary_refresh(id) from unnest(v_rebuild) as id;
    perform set_config('maelab.batch', 'off', true);

    return query
    select i.id,
           case when r.run_id is null then 'not_found'
                when r.source <> 'external' then 'worker'
                when i.id = any(v_ok) then 'ok'
                else r.status::text end,
           i.first_epoch, i.last_epoch
    from (select u.r as id,
                 (min(u.s) filter (where u.e))::integer as first_epoch,
                 (max(u.s) filter (where u.e))::integer as last_epoch
          from unnest(p_runs, p_steps, p_epoch) as u(r, s, e) group by u.r) i
    left join run r on r.run_id = i.id;
end $$;
