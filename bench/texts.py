"""Fixed plain-English text for perplexity (written for this benchmark; not used for calibration)."""

EVAL_TEXT = """\
The town where I grew up sat at the bend of a slow brown river, and most of what happened there happened \
because of the water. In spring the river rose and covered the low fields, and the farmers waited for it to \
fall before they planted. In summer it was shallow enough that children could wade across to the island, where \
the willows grew thick and the grass was always cool. In autumn the fog came off the water in the mornings and \
lay over the streets until nearly noon, and in winter, in the coldest years, the edges froze and the old men \
walked out on the ice to fish.

My grandfather kept a small shop near the bridge. He sold nails, rope, paint, seeds, lamp oil, and anything else \
a person might need to keep a house standing or a garden growing. The shop had a wooden floor that creaked in \
three places, and I learned to walk around those places when I wanted to surprise him. He never looked \
surprised. He would only smile, put down whatever he was counting, and ask me what I had learned at school that \
day. If I said nothing, he would tell me that nothing was not an answer, and that I should go outside and look \
at something until I had learned it.

So I looked at things. I watched the boats that carried grain down the river to the city, and I learned how the \
men on board used long poles to push away from the sandbars. I watched the swallows that built their nests \
under the bridge, and I learned that they came back to the same nests every year. I watched the baker open his \
shop before dawn, and I learned that bread needs time more than it needs anything else. When I told my \
grandfather these things, he would nod and say that each of them was worth knowing, and then he would give me \
a job to do: sweeping the floor, sorting screws into their boxes, or writing prices on small paper cards in my \
best handwriting.

The most important lesson he taught me was about the scale. It was an old iron scale with a flat brass pan, and \
he used it to weigh nails, seeds, and sugar. Every morning before he opened the shop, he checked it with a set of \
small weights that he kept in a velvet box. If the scale was off, even by a little, he adjusted it before he sold \
a single thing. I asked him once why he bothered, since no customer had ever complained. He told me that a \
person who cheats by a little will soon cheat by a lot, and that the only way to be sure you are honest is to \
check yourself when nobody is watching.

When I was twelve, a flood came that was bigger than any the town had seen in fifty years. The rain fell for \
nine days without stopping, and the river climbed over its banks and into the streets. People carried their \
furniture up to the second floors of their houses, and some of them left the town altogether and went to stay \
with relatives in the hills. My grandfather refused to leave. He moved the most valuable things in the shop onto \
the high shelves, stacked sandbags against the door, and sat up every night with a lamp, listening to the water.

On the fifth night the water came under the door anyway. It was only a few inches deep at first, but it kept \
rising, and by morning it reached the second shelf. We spent the day carrying boxes up the narrow stairs to the \
room above the shop, where my grandfather had slept as a young man. I remember how heavy the paint cans were, \
and how the rope smelled when it got wet, and how my grandfather never once complained, even when his hands \
were raw from lifting. He said that water does what water does, and that people must do what people do, which \
is to work and to help each other.

When the river finally went down, the town was covered in mud. It was in the houses, in the churches, in the \
school, and in every shop along the main street. The smell was terrible, and for weeks the air was full of dust \
as the mud dried and people swept it out of their doors. My grandfather opened the shop again as soon as he \
could, even though half of what he had to sell was ruined. He gave away shovels and buckets to anyone who \
needed them, and he told people to pay him later, when they could. Many of them never paid, and he never asked \
them to.

Years later, after he died, I found his account book in a drawer. Inside were the names of everyone who had \
taken something from the shop after the flood, with the amount they owed written beside each name. Next to \
every single one, in the same careful handwriting he used for the price cards, he had written the word forgiven \
and the date. Some of the dates were only a few days after the flood. He had never meant to collect at all. He \
had only written the debts down so that he would remember who had needed help, and so that he could check on \
them later and see how they were doing.

I still live near a river, though a different one, and I still check my own scale every morning, in a manner \
of speaking. I try to notice when I am about to cut a corner, or tell a small lie, or take a little more than is \
fair. It is not always easy. But whenever I am tempted, I think of the iron scale with its brass pan, and the \
velvet box of weights, and the old man who checked them every day because that was the only way to be sure.
"""
