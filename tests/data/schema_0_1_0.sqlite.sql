-- The SQLite schema tweetforge 0.1.0 made with metadata.create_all, before migrations existed.
-- tests/test_db.py builds a data home from it to check that such a home upgrades itself.

CREATE TABLE datasets (
	name VARCHAR(100) NOT NULL, 
	path TEXT NOT NULL, 
	content_hash VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	rules_version VARCHAR(16) NOT NULL, 
	authors JSON NOT NULL, 
	filters JSON NOT NULL, 
	counts JSON NOT NULL, 
	posts INTEGER NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE evaluations (
	id INTEGER NOT NULL, 
	subject VARCHAR(300) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	dataset VARCHAR(100) NOT NULL, 
	dataset_hash VARCHAR(64) NOT NULL, 
	settings_hash VARCHAR(64) NOT NULL, 
	settings JSON NOT NULL, 
	metrics JSON NOT NULL, 
	samples JSON NOT NULL, 
	copies JSON NOT NULL, 
	seconds FLOAT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_evaluations_subject ON evaluations (subject, dataset_hash, settings_hash);

CREATE TABLE experiment_decisions (
	id INTEGER NOT NULL, 
	experiment VARCHAR(100) NOT NULL, 
	at DATETIME NOT NULL, 
	state VARCHAR(32) NOT NULL, 
	winner VARCHAR(64), 
	promoted BOOLEAN NOT NULL, 
	statistics JSON NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE experiments (
	name VARCHAR(100) NOT NULL, 
	metric VARCHAR(16) NOT NULL, 
	min_sample INTEGER NOT NULL, 
	alpha FLOAT NOT NULL, 
	auto_promote BOOLEAN NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	created_at DATETIME NOT NULL, 
	stopped_at DATETIME, 
	winner VARCHAR(64), 
	PRIMARY KEY (name)
);

CREATE TABLE generations (
	id VARCHAR(36) NOT NULL, 
	created_at DATETIME NOT NULL, 
	model_name VARCHAR(100) NOT NULL, 
	model_version INTEGER NOT NULL, 
	experiment VARCHAR(100), 
	variant VARCHAR(64), 
	pair_id VARCHAR(36), 
	user_id VARCHAR(100), 
	prompt TEXT NOT NULL, 
	params JSON NOT NULL, 
	posts JSON NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_generations_experiment ON generations (experiment, variant);
CREATE INDEX ix_generations_pair ON generations (pair_id);

CREATE TABLE imports (
	id INTEGER NOT NULL, 
	source TEXT NOT NULL, 
	format VARCHAR(32) NOT NULL, 
	file_hash VARCHAR(64) NOT NULL, 
	author_override VARCHAR(100), 
	started_at DATETIME NOT NULL, 
	duration_s FLOAT, 
	records INTEGER NOT NULL, 
	new INTEGER NOT NULL, 
	updated INTEGER NOT NULL, 
	unchanged INTEGER NOT NULL, 
	repeated INTEGER NOT NULL, 
	skipped INTEGER NOT NULL, 
	refused INTEGER NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE model_aliases (
	name VARCHAR(100) NOT NULL, 
	alias VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (name, alias)
);

CREATE TABLE model_versions (
	name VARCHAR(100) NOT NULL, 
	version INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	path TEXT NOT NULL, 
	base TEXT NOT NULL, 
	dataset VARCHAR(100) NOT NULL, 
	dataset_hash VARCHAR(64) NOT NULL, 
	run_id VARCHAR(200) NOT NULL, 
	params JSON NOT NULL, 
	metrics JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name, version)
);

CREATE TABLE optouts (
	handle VARCHAR(100) NOT NULL, 
	added_at DATETIME NOT NULL, 
	reason TEXT, 
	PRIMARY KEY (handle)
);

CREATE TABLE promotions (
	id INTEGER NOT NULL, 
	name VARCHAR(100) NOT NULL, 
	alias VARCHAR(64) NOT NULL, 
	from_version INTEGER, 
	to_version INTEGER NOT NULL, 
	promoted BOOLEAN NOT NULL, 
	forced BOOLEAN NOT NULL, 
	who VARCHAR(100) NOT NULL, 
	at DATETIME NOT NULL, 
	dataset VARCHAR(100), 
	candidate JSON NOT NULL, 
	champion JSON, 
	reason TEXT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE experiment_variants (
	experiment VARCHAR(100) NOT NULL, 
	variant VARCHAR(64) NOT NULL, 
	model_name VARCHAR(100) NOT NULL, 
	model_version INTEGER NOT NULL, 
	weight FLOAT NOT NULL, 
	PRIMARY KEY (experiment, variant), 
	FOREIGN KEY(experiment) REFERENCES experiments (name) ON DELETE CASCADE
);

CREATE TABLE feedback (
	id INTEGER NOT NULL, 
	generation_id VARCHAR(36) NOT NULL, 
	event VARCHAR(16) NOT NULL, 
	winner_id VARCHAR(36), 
	user_id VARCHAR(100), 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(generation_id) REFERENCES generations (id)
);
CREATE INDEX ix_feedback_generation ON feedback (generation_id);

CREATE TABLE import_skips (
	import_id INTEGER NOT NULL, 
	n INTEGER NOT NULL, 
	location TEXT NOT NULL, 
	reason TEXT NOT NULL, 
	PRIMARY KEY (import_id, n), 
	FOREIGN KEY(import_id) REFERENCES imports (id) ON DELETE CASCADE
);

CREATE TABLE post_history (
	id INTEGER NOT NULL, 
	network VARCHAR(32) NOT NULL, 
	post_id VARCHAR(64) NOT NULL, 
	text TEXT NOT NULL, 
	replaced_by_import_id INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(replaced_by_import_id) REFERENCES imports (id)
);
CREATE INDEX ix_post_history_post ON post_history (network, post_id);

CREATE TABLE post_imports (
	network VARCHAR(32) NOT NULL, 
	post_id VARCHAR(64) NOT NULL, 
	import_id INTEGER NOT NULL, 
	PRIMARY KEY (network, post_id, import_id), 
	FOREIGN KEY(import_id) REFERENCES imports (id)
);

CREATE TABLE posts (
	network VARCHAR(32) NOT NULL, 
	post_id VARCHAR(64) NOT NULL, 
	author VARCHAR(100) NOT NULL, 
	text TEXT NOT NULL, 
	created_at DATETIME, 
	is_retweet BOOLEAN NOT NULL, 
	reply_to VARCHAR(100), 
	likes BIGINT, 
	reposts BIGINT, 
	language VARCHAR(16), 
	first_import_id INTEGER NOT NULL, 
	updated_import_id INTEGER, 
	PRIMARY KEY (network, post_id), 
	FOREIGN KEY(first_import_id) REFERENCES imports (id), 
	FOREIGN KEY(updated_import_id) REFERENCES imports (id)
);
CREATE INDEX ix_posts_author ON posts (author);
