from tweetforge.cli import app

app(prog_name="tweetforge")
