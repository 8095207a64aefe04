-- Run summaries on the run row: what the run lists show of a run's epochs
-- (epochs done, best test top-1/top-5, last training loss, train time, mean
-- throughput, parameter count), kept by a trigger on epoch_metric in the same
-- transaction as the epoch write, so a list reads 50 rows instead of
-- aggregating the epoch rows of 50 runs on every request.

alter table run
    add column epochs_done             integer not null default 0 check (epochs_done >= 0),
    add column last_epoch              integer,                  -- highest epoch recorded
    add column best_acc1               double precision,         -- max test_acc1
    add column best_acc5               double precision,         -- max test_acc5
    add column last_train_loss         double precision,         -- train_loss of last_epoch
    add column train_seconds           double precision,         -- sum of epoch_seconds
    add column mean_images_per_second  double precision,         -- avg of images_per_second
    add column epoch_n_parameters      bigint;                   -- max n_parameters of the epochs

-- Recompute one run's summary from all its epoch rows (a full recompute, so an
-- upserted or rewritten epoch can never leave a stale best or last value).
-- The run row is locked first: under READ COMMITTED the aggregate, a later
-- statement, then takes a fresh snapshot and sees the rows of any concurrent
-- writer that held the lock before. Callers hold the job row already (the
-- fenced metric writes), and the queue locks job before run too, so the lock
-- order stays job -> run. The update names no `status`, so the
-- `update of status` NOTIFY trigger on run does not fire.
create function run_summary_refresh(p_run_id uuid) returns void language plpgsql as $$
begin
    perform 1 from run where run_id = p_run_id for no key update;
    if not found then
        return;  -- the run is being deleted (cascade)
    end if;
    update run r set
        epochs_done = a.epochs_done, last_epoch = a.last_epoch, best_acc1 = a.best_acc1,
        best_acc5 = a.best_acc5, last_train_loss = a.last_train_loss,
        train_seconds = a.train_seconds, mean_images_per_second = a.mean_images_per_second,
        epoch_n_parameters = a.epoch_n_parameters
    from (
        select count(*)::integer as epochs_done, max(e.epoch) as last_epoch,
               max(e.test_acc1) as best_acc1, max(e.test_acc5) as best_acc5,
               (array_agg(e.train_loss order by e.epoch desc))[1] as last_train_loss,
               sum(e.epoch_seconds) as train_seconds,
               avg(e.images_per_second) as mean_images_per_second,
               max(e.n_parameters) as epoch_n_parameters
        from epoch_metric e where e.run_id = p_run_id
    ) a
    where r.run_id = p_run_id
      and (r.epochs_done, r.last_epoch, r.best_acc1, r.best_acc5, r.last_train_loss,
           r.train_seconds, r.mean_images_per_second, r.epoch_n_parameters)
          is distinct from
          (a.epochs_done, a.last_epoch, a.best_acc1, a.best_acc5, a.last_train_loss,
           a.train_seconds, a.mean_images_per_second, a.epoch_n_parameters);
end $$;

create function epoch_metric_run_summary() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        perform run_summary_refresh(new.run_id);
    elsif tg_op = 'UPDATE' then
        perform run_summary_refresh(new.run_id);
        if old.run_id <> new.run_id then
            perform run_summary_refresh(old.run_id);
        end if;
    else
        perform run_summary_refresh(old.run_id);
    end if;
    return null;
end $$;
create trigger epoch_metric_run_summary after insert or update or delete on epoch_metric
    for each row execute function epoch_metric_run_summary();

create function epoch_metric_truncated() returns trigger language plpgsql as $$
begin
    update run set epochs_done = 0, last_epoch = null, best_acc1 = null, best_acc5 = null,
                   last_train_loss = null, train_seconds = null,
                   mean_images_per_second = null, epoch_n_parameters = null
    where epochs_done <> 0;
    return null;
end $$;
create trigger epoch_metric_run_summary_truncate after truncate on epoch_metric
    for each statement execute function epoch_metric_truncated();

-- Backfill from the epoch rows already there.
update run r set
    epochs_done = a.epochs_done, last_epoch = a.last_epoch, best_acc1 = a.best_acc1,
    best_acc5 = a.best_acc5, last_train_loss = a.last_train_loss,
    train_seconds = a.train_seconds, mean_images_per_second = a.mean_images_per_second,
    epoch_n_parameters = a.epoch_n_parameters
from (
    select e.run_id, count(*)::integer as epochs_done, max(e.epoch) as last_epoch,
           max(e.test_acc1) as best_acc1, max(e.test_acc5) as best_acc5,
           (array_agg(e.train_loss order by e.epoch desc))[1] as last_train_loss,
           sum(e.epoch_seconds) as train_seconds,
           avg(e.images_per_second) as mean_images_per_second,
           max(e.n_parameters) as epoch_n_parameters
    from epoch_metric e group by e.run_id
) a
where r.run_id = a.run_id;
