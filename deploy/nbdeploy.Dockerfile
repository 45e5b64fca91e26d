# One nbdeploy model server (built from this repository, with the team extra).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nbdeploy ./nbdeploy
ENV HATCH_BUILD_NO_HOOKS=true
RUN pip install --no-cache-dir ".[team]"
EXPOSE 8080
