-- The prediction log gets its own database next to MLflow's.
CREATE DATABASE audit OWNER nbdeploy;
