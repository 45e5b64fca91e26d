import { JobsModel, Request } from '../jobsmodel';
import { IJobRun, ISchedule } from '../types';

const nightly: ISchedule = {
  name: 'nightly',
  notebook: '/lab/train.ipynb',
  every: '1d',
  cron: null,
  next_run: '2026-11-30T06:00:00+0000',
  last_status: null,
  paused: false,
  catchup: false,
  parameters: {}
};

function run(id: string, status: string): IJobRun {
  return {
    run_id: id,
    job: 'nightly',
    status,
    started: '2026-11-29T06:00:00+00:00',
    scheduled_for: null,
    duration_s: status === 'running' ? null : 3.5,
    output_path: '/lab/runs/x.ipynb',
    error: status === 'failed' ? "cell In [2] raised ValueError: no data" : null,
    failed_cell: status === 'failed' ? 2 : null,
    produced: []
  };
}

interface ICall {
  endPoint: string;
  method: string;
  body: any;
}

interface IFake {
  runs: IJobRun[];
  calls: ICall[];
  refuse: string | null;
  request: Request;
}

function fakeServer(): IFake {
  const server: IFake = {
    runs: [],
    calls: [],
    refuse: null,
    request: (async (endPoint: string, init: RequestInit = {}) => {
      const method = init.method ?? 'GET';
      server.calls.push({
        endPoint,
        method,
        body: init.body ? JSON.parse(String(init.body)) : null
      });
      if (method !== 'GET' && server.refuse) {
        throw new Error(server.refuse);
      }
      if (endPoint === 'jobs') {
        return { schedules: [nightly], runs: server.runs };
      }
      if (endPoint.endsWith('/run')) {
        return { run_id: 'r9' };
      }
      if (endPoint.startsWith('schedules/preview')) {
        return { next_runs: ['a', 'b', 'c'] };
      }
      return { ...nightly };
    }) as Request
  };
  return server;
}

describe('JobsModel', () => {
  let model: JobsModel;
  afterEach(() => model?.dispose());

  it('lists schedules and runs', async () => {
    const server = fakeServer();
    server.runs = [run('r1', 'succeeded')];
    model = new JobsModel({ request: server.request });
    await model.refresh();
    expect(model.loaded).toBe(true);
    expect(model.schedules.map(s => s.name)).toEqual(['nightly']);
    expect(model.runs[0].status).toBe('succeeded');
  });

  it('announces a run that fails, once, and not the failures it found at start', async () => {
    const server = fakeServer();
    server.runs = [run('old', 'failed'), run('r1', 'running')];
    model = new JobsModel({ request: server.request });
    const failed: string[] = [];
    model.runFailed.connect((_, r) => failed.push(r.run_id as string));
    await model.refresh();
    expect(failed).toEqual([]);
    server.runs = [run('old', 'failed'), run('r1', 'failed'), run('r2', 'failed')];
    await model.refresh();
    expect(failed).toEqual(['r1', 'r2']);
    await model.refresh();
    expect(failed).toEqual(['r1', 'r2']);
  });

  it('does not poll while hidden', async () => {
    const server = fakeServer();
    model = new JobsModel({ request: server.request });
    model.active = false;
    await model.refresh();
    expect(server.calls).toHaveLength(0);
  });

  it('posts run now, pause, resume and create, and encodes names', async () => {
    const server = fakeServer();
    model = new JobsModel({ request: server.request });
    expect(await model.runNow('a b')).toBe('r9');
    await model.pause('nightly');
    await model.resume('nightly');
    await model.create({
      notebook: 'train.ipynb',
      name: 'nightly',
      every: '1d',
      parameters: { rows: 5 }
    });
    const posts = server.calls.filter(c => c.method === 'POST');
    expect(posts.map(c => c.endPoint)).toEqual([
      'jobs/a%20b/run',
      'jobs/nightly/pause',
      'jobs/nightly/resume',
      'schedules'
    ]);
    expect(posts[3].body).toEqual({
      notebook: 'train.ipynb',
      name: 'nightly',
      every: '1d',
      parameters: { rows: 5 }
    });
    expect(await model.preview('cron', '0 6 * * *')).toEqual(['a', 'b', 'c']);
    expect(server.calls.map(c => c.endPoint)).toContain(
      'schedules/preview?cron=0%206%20*%20*%20*'
    );
  });

  it("rejects a refused schedule with the server's message", async () => {
    const server = fakeServer();
    server.refuse = "train.ipynb has no parameter 'epochs'";
    model = new JobsModel({ request: server.request });
    await expect(
      model.create({ notebook: 'train.ipynb', name: 'x', every: '1h', parameters: { epochs: 1 } })
    ).rejects.toThrow(/no parameter 'epochs'/);
  });
});
