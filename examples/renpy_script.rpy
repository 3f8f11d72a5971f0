# A short Ren'Py scene, as a game's game/script.rpy holds it (written for this project's examples).

define m = Character("Mira", color="#c8a2ff")
define t = Character("Theo", color="#9fd3ff")
define k = DynamicCharacter("keeper_name")
default keeper_name = "???"
default player_name = "Sam"

label start:
    scene bg lighthouse with fade
    play music "audio/waves.ogg"

    "The wind pushed at the lighthouse door all evening."

    show mira smile
    m "You came! I was sure the storm would keep you away."
    t "A little rain never stopped me. {i}A lot{/i} of rain, maybe."
    m happy "Then sit down before you drip on the maps.{w} Tea?"
    t "Please. What are the maps for?"
    m "The old keeper drew them. Every rock between here and the harbour."
    extend " Every single one."

    k "He drew them badly, mind you."
    $ keeper_name = "Old Anwen"
    k "I'm Anwen. I kept this light for forty years."
    m "She keeps telling me the maps are wrong, [player_name]."

    menu:
        m "Do you want to see them?"

        "Yes, show me.":
            m "Look here. This line is the reef the fishermen fear."
            t "It looks like a smile."
            m "That's what they said before the {b}Marigold{/b} went down."

        "Maybe tomorrow.":
            m "Tomorrow, then. The sea isn't going anywhere."

label night:
    scene bg lighthouse night
    "Later, the lamp turned slowly above them."
    t "Do you ever get tired of the light?"
    m """
    Never.

    It's the only thing out here that always comes back.
    """
    return
