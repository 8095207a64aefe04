-- Studies (issue 11): a base config, named arms, seeds and a budget, expanded
-- at submit into chains (one per arm and seed). A chain is a pretrain run and
-- the finetune queued from its last checkpoint when it succeeds, or a single
-- run (a pretrain-only or finetune-only study, a from-scratch arm). The runs
-- of a study are ordinary runs that point back at their study, arm and seed.

create table study (
    study_id      uuid primary key default gen_random_uuid(),
    name          text not null check (length(name) between 1 and 200),
    spec          jsonb not null,                           -- the submitted document, as JSON
    stages        text not null check (stages in ('pretrain_finetune', 'pretrain', 'finetune')),
    baseline_arm  text not null,                            -- what differences are taken against
    budget        jsonb not null,                           -- the parsed budget (epochs or seconds)
    created_by    text,                                     -- token name, or null for the local form
    created_at    timestamptz not null default now(),
    cancelled_at  timestamptz,                              -- while set, no chain queues anything new
    updated_at    timestamptz not null default now()
);
create trigger study_updated_at before update on study for each row execute function set_updated_at();
create index study_created_at on study (created_at desc);

create table study_arm (
    study_id   uuid not null references study (study_id) on delete cascade,
    arm        text not null check (arm ~ '^[A-Za-z0-9][A-Za-z0-9_.=,+-]{0,99}$'),
    position   integer not null check (position >= 0),      -- order on the pages
    overrides  jsonb not null,                              -- the arm's fields over the base
    scratch    boolean not null default false,              -- a finetune from scratch, no pretrain
    primary key (study_id, arm),
    unique (study_id, position)
);

-- One chain per arm and seed. The configs are resolved and validated at
-- submit; `finetune_config` gets its parent_run when the pretrain succeeds.
-- With a seconds budget the epochs are placeholders until the arm is
-- calibrated, and the chain's first run is created only then.
create table study_chain (
    study_id         uuid not null,
    arm              text not null,
    seed             bigint not null check (seed >= 0),
    pretrain_config  jsonb,                                 -- null: no pretraining stage
    finetune_config  jsonb,                                 -- null: no finetuning stage
    error            text,                                  -- why a next stage could not be queued
    primary key (study_id, arm, seed),
    foreign key (study_id, arm) references study_arm (study_id, arm) on delete cascade,
    check (pretrain_config is not null or finetune_config is not null)
);

-- A seconds budget becomes images through the arm's measured throughput on
-- the worker that calibrated it: images = seconds x images/s, epochs =
-- ceil(images / train images) (at least 1), each a fresh random sample of
-- images / epochs training images. One row per arm and stage.
create table study_calibration (
    study_id           uuid not null,
    arm                text not null,
    stage              run_kind not null,
    device             text not null,                       -- cpu, cuda:0 (the calibrating worker's)
    gpu_name           text,
    worker_id          uuid references worker (worker_id) on delete set null,
    images_per_second  double precision not null check (images_per_second > 0),
    budget_seconds     double precision not null check (budget_seconds > 0),
    train_images       bigint not null check (train_images > 0),   -- the training split
    epochs             integer not null check (epochs > 0),
    epoch_images       bigint not null check (epoch_images > 0),   -- sampled per epoch
    measured_at        timestamptz not null default now(),
    primary key (study_id, arm, stage),
    foreign key (study_id, arm) references study_arm (study_id, arm) on delete cascade
);

alter table run
    add column study_id    uuid references study (study_id) on delete set null,
    add column study_arm   text,
    add column study_seed  bigint,
    add check (study_id is null or (study_arm is not null and study_seed is not null));
-- At most one run of each kind per chain: the completion path's insert of a
-- chain's finetune is idempotent.
create unique index run_study_chain on run (study_id, study_arm, study_seed, kind)
    where study_id is not null;

-- Calibration jobs have no run: their payload names the study and the arm.
do $$
declare c record;
begin
    for c in select conname from pg_constraint
             where conrelid = 'job'::regclass and contype = 'c'
               and pg_get_constraintdef(oid) like '%job_type%'
    loop
        execute format('alter table job drop constraint %I', c.conname);
    end loop;
end $$;
alter table job
    add constraint job_type_known check (job_type in ('train', 'load_test', 'calibrate')),
    add constraint job_run_for_train check (job_type <> 'train' or run_id is not null);

-- The study pages follow calibration like run changes (the payload's run_id
-- is the nil uuid: no run changed, a study did).
create function notify_study_calibration() returns trigger language plpgsql as $$
begin
    perform pg_notify('maelab_events', json_build_object(
        'run_id', '00000000-0000-0000-0000-000000000000', 'table', tg_table_name,
        'study_id', new.study_id)::text);
    return null;
end $$;
create trigger study_calibration_notify after insert or update on study_calibration
    for each row execute function notify_study_calibration();
