import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The API answered with an error, or could not be reached (`status` 0). */
export class RequestError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

/**
 * Call the nbdeploy server extension.
 *
 * @param endPoint path under `/nbdeploy/api/`, e.g. `models` or `models/churn/promote`
 * @param init fetch options; a `body` object is sent as JSON
 * @returns the decoded JSON answer
 * @throws RequestError with the server's own message on any failure
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'nbdeploy', 'api', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new RequestError(
      `cannot reach the Jupyter server: ${(error as Error).message}`,
      0
    );
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText || 'error'} from ${endPoint}`;
    if (data && typeof data.message === 'string' && data.message) {
      message = data.message;
    } else if (response.status === 404) {
      message =
        'the nbdeploy server extension is not enabled in this Jupyter server ' +
        '(run: jupyter server extension enable nbdeploy, then restart JupyterLab)';
    }
    throw new RequestError(message, response.status);
  }
  if (data === null) {
    throw new RequestError(
      `the server sent no JSON for ${endPoint}; is the nbdeploy server extension enabled? ` +
        '(jupyter server extension list)',
      response.status
    );
  }
  return data as T;
}
