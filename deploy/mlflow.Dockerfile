# The MLflow tracking server with the PostgreSQL driver MLflow's SQLAlchemy expects
# for postgresql:// URLs (psycopg 3).
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow==3.17.*" "psycopg[binary]>=3.2"
EXPOSE 5000
